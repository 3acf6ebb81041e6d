"""One training step of a kws-stream recipe's continuous form, native scan against chunked scan.

The step is the trainer's: the recipe's model, ``ContinuousObjective`` (features at the training
block size, head at every block end, masked cross-entropy), backward, AdamW. The batch has the
recipe's shape: batch_size clips laid out in rows of ``row_clips`` one-second clips with the mean
row gap, framed by ``stream_frames``; the audio is noise and the targets random, as only the
shapes matter for time. Both scans run on the same model and batch, interleaved step by step;
the figure is the median after warm-up.

    python benchmarks/train_step_bench.py [--recipe training/recipes/kws-bundled-continuous-nearmiss-strong.yaml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from ssamba_stream.model.native_scan import native_scan_available
from ssamba_stream.model.streaming import block_samples, stream_frames
from ssamba_training.config import load_recipe
from ssamba_training.kws_stream import ContinuousObjective
from ssamba_training.model_init import build_recipe_model

RECIPE = (
    Path(__file__).resolve().parents[1]
    / "training"
    / "recipes"
    / "kws-bundled-continuous-nearmiss-strong.yaml"
)
SAMPLE_RATE = 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not native_scan_available():
        raise SystemExit("the native scan is not available here: nothing to compare")
    recipe = load_recipe(args.recipe)
    stream = recipe.stream
    if not stream.row_clips:
        raise SystemExit(f"{args.recipe.name} is not a continuous recipe (stream.row_clips is 0)")
    torch.manual_seed(0)
    model = build_recipe_model(recipe, [f"class{i}" for i in range(12)]).train()
    objective = ContinuousObjective(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.optim.lr)
    block = stream.train_blocks[0] or model.config.backward_block
    step = block_samples(model, block)
    rows = recipe.data.batch_size // stream.row_clips
    seconds = stream.row_clips * (1.0 + sum(stream.row_gap_seconds) / 2)
    samples = int(seconds * SAMPLE_RATE) // step * step
    audio = 0.1 * torch.randn(rows, samples)
    with torch.no_grad():
        fbank = stream_frames(model, audio, None, block)
    blocks = samples // step
    targets = torch.randint(0, model.config.num_classes, (rows, blocks))

    def train_step(scan: str) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = objective(fbank, targets, block, scan)["loss"]
        loss.backward()
        optimizer.step()
        return loss.item()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.recipe.name}: model "
        f"{recipe.model.name}, {rows} rows x {fbank.shape[1]} frames ({seconds:.1f} s of stream each, "
        f"{recipe.data.batch_size} clips), block {block}"
    )
    times: dict[str, list[float]] = {"chunked": [], "native": []}
    for i in range(args.warmup + args.repeats):
        for impl in times:
            start = time.perf_counter()
            train_step(impl)
            if i >= args.warmup:
                times[impl].append(time.perf_counter() - start)
    median = {impl: statistics.median(v) for impl, v in times.items()}
    spread = ", ".join(f"{impl} {min(v):.2f}-{max(v):.2f}" for impl, v in times.items())
    print(
        f"training step, median of {args.repeats}: chunked {median['chunked']:.2f} s  native "
        f"{median['native']:.2f} s  chunked/native {median['chunked'] / median['native']:.2f}x  (min-max s: {spread})"
    )
    print(f"load average (1 min) after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
