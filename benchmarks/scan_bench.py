"""Forward+backward (or forward) time of the native and chunked selective scans against the sequential reference.

All three run side by side in one process on the same inputs (a Mamba layer at initialisation:
S4D-real A, softplus step sizes in [1e-3, 1e-1], D, z gate; the layer's channels-last layouts),
interleaved repeat by repeat so that load from other processes hits both alike; the figure is the
median of the repeats after warm-up.

    python benchmarks/scan_bench.py                       # L=1024, d_inner=384, d_state=16, batch 1 and 8
    python benchmarks/scan_bench.py --batch 4 --threads 1
    python benchmarks/scan_bench.py --forward-only          # inference
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

from ssamba_stream.model.native_scan import native_scan_available, selective_scan_native
from ssamba_stream.model.scan import DEFAULT_CHUNK_SIZE, selective_scan_chunked, selective_scan_ref


def make_step(
    fn: Callable,
    batch: int,
    length: int,
    d_inner: int,
    d_state: int,
    seed: int = 0,
    backward: bool = True,
) -> Callable[[], None]:
    """One training step's worth of scan work (forward, then backward into every input), or with
    ``backward=False`` one inference forward under no_grad. The inputs come in a Mamba layer's
    layouts: u, delta and z as (batch, d, L) views of (batch, L, d) tensors, B and C as views of
    (batch, L, n) columns."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    leaves = {
        "u": torch.randn(batch, length, d_inner, generator=g),
        "delta": 0.1 * torch.randn(batch, length, d_inner, generator=g),
        "A": -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),
        "B": torch.randn(batch, length, d_state, generator=g),
        "C": torch.randn(batch, length, d_state, generator=g),
        "D": torch.ones(d_inner),
        "z": torch.randn(batch, length, d_inner, generator=g),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus, as Mamba initialises it
    }
    channels_last = ("u", "delta", "B", "C", "z")
    for v in leaves.values():
        v.requires_grad_(backward)
    grad_out = torch.randn(batch, d_inner, length, generator=g)

    def step() -> None:
        args = {k: v.transpose(1, 2) if k in channels_last else v for k, v in leaves.items()}
        if not backward:
            with torch.no_grad():
                fn(**args, delta_softplus=True)
            return
        for v in leaves.values():
            v.grad = None
        fn(**args, delta_softplus=True).backward(grad_out)

    return step


def bench(
    batch: int,
    length: int,
    d_inner: int,
    d_state: int,
    chunk_size: int,
    warmup: int,
    repeats: int,
    backward: bool = True,
) -> None:
    shape = dict(batch=batch, length=length, d_inner=d_inner, d_state=d_state, backward=backward)
    steps = {
        "reference": make_step(selective_scan_ref, **shape),
        "chunked": make_step(lambda **kw: selective_scan_chunked(**kw, chunk_size=chunk_size), **shape),
    }
    if native_scan_available():
        steps["native"] = make_step(selective_scan_native, **shape)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(v) for name, v in times.items()}
    fastest = "native" if "native" in median else "chunked"
    figures = "  ".join(f"{name} {t * 1e3:8.1f} ms" for name, t in median.items())
    ratios = "  ".join(
        f"{name}/{fastest} {t / median[fastest]:5.1f}x" for name, t in median.items() if name != fastest
    )
    spread = ", ".join(f"{name} {min(v) * 1e3:.0f}-{max(v) * 1e3:.0f}" for name, v in times.items())
    print(
        f"batch={batch:<3d} L={length} d_inner={d_inner} d_state={d_state} chunk={chunk_size}: "
        f"{figures}  {ratios}  (min-max ms: {spread})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--d-inner", type=int, default=384)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--forward-only", action="store_true", help="inference: the forward under no_grad")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}, "
        f"{'forward' if args.forward_only else 'forward+backward'}, median"
    )
    for batch in args.batch:
        bench(
            batch,
            args.length,
            args.d_inner,
            args.d_state,
            args.chunk_size,
            args.warmup,
            args.repeats,
            backward=not args.forward_only,
        )
    # Other processes on the cores stall every multi-threaded op of the chunked form: check this.
    print(f"load average (1 min) after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
