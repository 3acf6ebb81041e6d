"""Long-run health of a streaming session: state bounded, memory flat, time per block flat.

Streams an hour (by default) of synthetic audio — tone glides, noise bursts, silence, level jumps,
generated piece by piece so the script itself holds little memory — through one StreamingSession
in 100 ms chunks, as a microphone would deliver it, and reports per interval: process RSS, the
largest |value| in each state tensor, and the mean time per block.

    python benchmarks/long_run.py [--model kws.onnx] [--minutes 60] [--interval 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssamba_export.verify import test_signal
from ssamba_stream.runtime.session import StreamingSession


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status: this measurement needs Linux")


@dataclass
class Interval:
    minute: float
    rss_mb: float
    block_ms: float
    state_max: dict[str, float] = field(default_factory=dict)


def stream_for(
    session: StreamingSession, minutes: float, interval_minutes: float, chunk_seconds: float = 0.1
) -> list[Interval]:
    """Stream ``minutes`` of audio; one Interval record every ``interval_minutes``."""
    rate = session.sample_rate
    chunk = int(chunk_seconds * rate)
    piece_seconds = 10.0
    records, elapsed, blocks_before, piece = [], 0.0, session.blocks, 0
    next_report = interval_minutes * 60
    streamed = 0.0
    while streamed < minutes * 60:
        audio = test_signal(piece_seconds, rate, seed=piece)
        piece += 1
        for start in range(0, audio.size, chunk):
            began = time.perf_counter()
            session.process(audio[start : start + chunk])
            elapsed += time.perf_counter() - began
        streamed += piece_seconds
        if streamed >= next_report:
            blocks = session.blocks - blocks_before
            state = session.snapshot().state
            records.append(
                Interval(
                    streamed / 60,
                    rss_mb(),
                    1e3 * elapsed / max(blocks, 1),
                    {k: float(np.abs(v).max()) for k, v in state.items()},
                )
            )
            if not all(np.isfinite(v).all() for v in state.values()):
                raise AssertionError(f"non-finite state after {streamed / 60:.1f} min")
            elapsed, blocks_before, next_report = 0.0, session.blocks, next_report + interval_minutes * 60
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="exported .onnx (default: a freshly exported random ssamba-kws)"
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0, help="minutes between reports")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            import torch

            from ssamba_export.onnx_export import export_onnx
            from ssamba_stream.model.checkpoint import save_model
            from ssamba_stream.model.registry import build_model

            torch.manual_seed(0)
            checkpoint = save_model(build_model("ssamba-kws", num_classes=12), Path(tmp) / "ckpt")
            model = Path(tmp) / "kws.onnx"
            export_onnx(checkpoint, model)
        session = StreamingSession(model, threads=args.threads)
        baseline = rss_mb()
        records = stream_for(session, args.minutes, args.interval)
    names = list(records[0].state_max)
    print(f"model: {model.name}, RSS after loading: {baseline:.1f} MiB")
    print("| minute | RSS MiB | ms per block | " + " | ".join(f"max abs {n}" for n in names) + " |")
    print("|---" * (3 + len(names)) + "|")
    for r in records:
        print(
            f"| {r.minute:.0f} | {r.rss_mb:.1f} | {r.block_ms:.3f} | "
            + " | ".join(f"{r.state_max[n]:.3g}" for n in names)
            + " |"
        )
    first, last = records[0], records[-1]
    print(
        f"RSS growth first to last interval: {last.rss_mb - first.rss_mb:+.1f} MiB; "
        f"time per block last/first: {last.block_ms / first.block_ms:.2f}"
    )


if __name__ == "__main__":
    main()
