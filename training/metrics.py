"""Metric logging: ``OUT/metrics.csv`` (one row per log step and per evaluation) and TensorBoard (``OUT/tb/``).

Columns are the union of the metric names seen (``train/loss``, ``validation/accuracy``, ...);
a new name rewrites the file with the wider header. On resume, rows after the checkpoint's step
are dropped (they belong to the killed run's lost future) and TensorBoard purges them likewise.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

FIXED_COLUMNS = ["time", "step", "epoch"]


class MetricsLog:
    """Appends metric rows; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, out: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out) / "metrics.csv"
        self.columns = list(FIXED_COLUMNS)
        self.writer = None
        if not enabled:
            return
        rows = self._read_rows()
        if rows:
            self.columns = list(rows[0].keys())
            kept = [r for r in rows if resume_step is not None and int(r["step"]) <= resume_step]
            self._rewrite(kept)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(Path(out) / "tb"), purge_step=resume_step + 1 if resume_step is not None else None
        )

    def _read_rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as file:
            return list(csv.DictReader(file))

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with open(self.path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        """One row: ``values`` at optimiser step ``step``."""
        if not self.enabled:
            return
        new = [name for name in values if name not in self.columns]
        if new or not self.path.is_file():
            rows = self._read_rows()
            self.columns += new
            self._rewrite(rows)
        row = {
            "time": f"{time.time():.3f}",
            "step": step,
            "epoch": epoch,
            **{k: f"{v:.6g}" for k, v in values.items()},
        }
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=self.columns).writerow(row)
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
