"""Console progress on rank 0: a rich bar (loss, accuracy, clips/s, ETA) on a terminal, plain lines elsewhere.

The bar is off when stdout is not a TTY or ``CI`` is set, so logs and CI output stay readable;
then the trainer's per-log-step lines carry the same numbers.
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def bar_enabled() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")


class EpochProgress:
    """One epoch's bar; ``update`` after every batch, ``close`` at the end."""

    def __init__(self, enabled: bool, description: str, total: int, done: int) -> None:
        self.enabled = enabled and bar_enabled()
        self.started = time.perf_counter()
        self.clips = 0
        if not self.enabled:
            return
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=Console(),
            transient=False,
        )
        self.task = self.bar.add_task(description, total=total, completed=done, stats="")
        self.bar.start()

    def update(self, clips: int, loss: float, accuracy: float | None) -> None:
        self.clips += clips
        if not self.enabled:
            return
        rate = self.clips / max(time.perf_counter() - self.started, 1e-9)
        acc = "" if accuracy is None else f" acc {accuracy:.3f}"
        self.bar.update(self.task, advance=1, stats=f"loss {loss:.4f}{acc} {rate:.0f} clips/s")

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


def say(enabled: bool, message: str) -> None:
    """Print a line on rank 0 (flushed: logs of long runs are read while they grow)."""
    if enabled:
        print(message, flush=True)
