"""The serving runtime's native block scan against the same kernel at another git revision, side by side.

For changes to ssamba_stream/runtime/csrc/block_scan.cpp or the fast_math.h it includes: the
revision's two files are compiled as the runtime compiles the working tree's, both kernels scan the
same random layer (one step graph call's worth: ``--batch`` streams, both directions, the bundled
model's shapes by default), round by round on one thread, and the outputs are compared. Prints the
median wall time per call, ns per state update and the ratio.

    python benchmarks/host_scan_kernel.py --against d1bd895~3 [--batch 32] [--length 8]
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ssamba_stream.runtime.host_scan import (
    HostBlockScan,
    compile_library,
    host_block_scan,
    random_scan_inputs,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "ssamba_stream/runtime/csrc/block_scan.cpp"
HEADER = "ssamba_stream/model/csrc/fast_math.h"


def kernel_at(revision: str, scratch: Path) -> HostBlockScan:
    """The kernel as it was at ``revision``, compiled into ``scratch``."""
    (scratch / "src").mkdir()
    (scratch / "include").mkdir()
    for path, folder in ((SOURCE, "src"), (HEADER, "include")):
        text = subprocess.run(
            ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        (scratch / folder / Path(path).name).write_text(text)
    library = scratch / "block_scan.so"
    compile_library(scratch / "src" / "block_scan.cpp", scratch / "include", library)
    return HostBlockScan(ctypes.CDLL(str(library)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision of the kernel to compare with")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=8, help="tokens per block")
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--channels", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    current = host_block_scan()
    if isinstance(current, str):
        raise SystemExit(f"error: the working tree's kernel cannot be built: {current}")
    inputs = random_scan_inputs(0, args.batch, args.length, args.state, args.channels)
    with tempfile.TemporaryDirectory() as scratch:
        kernels = {args.against: kernel_at(args.against, Path(scratch)), "working tree": current}
        outputs = {name: kernel(**inputs) for name, kernel in kernels.items()}
        (y_old, last_old), (y_new, last_new) = outputs.values()
        print(
            f"largest difference: y {np.abs(y_new - y_old).max():.2e}, state {np.abs(last_new - last_old).max():.2e}"
        )
        times: dict[str, list[float]] = {name: [] for name in kernels}
        calls = max(5, 640 // args.batch)
        for _ in range(args.rounds):
            for name, kernel in kernels.items():
                started = time.perf_counter()
                for _ in range(calls):
                    kernel(**inputs)
                times[name].append((time.perf_counter() - started) / calls)
    updates = args.batch * 2 * args.length * args.state * args.channels
    medians = {name: float(np.median(values)) for name, values in times.items()}
    print(f"| kernel | us per call ({args.batch} streams, one layer) | ns per state update |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e6:.1f} | {seconds / updates * 1e9:.3f} |")
    print(f"{args.against} / working tree: {medians[args.against] / medians['working tree']:.2f}")


if __name__ == "__main__":
    main()
