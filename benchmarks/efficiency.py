"""Inference time and peak memory against token count: SSAMBA-tiny vs SSAST-tiny (explicit and SDPA attention).

SSAMBA's headline (Tiny: 92.7% faster, 95.4% less memory than SSAST at 22k tokens) repeated on this
project's models, in one run, side by side: fp32, torch.no_grad, batch 2 (as SSAMBA's inference code),
``--warmup`` untimed then ``--runs`` timed forward passes, median. 16x16 patches at stride 16 on 128 mel
bins give 8 frequency patches, so N tokens are N/8*16 input frames (SSAMBA adds 1 and SSAST 2 extra
tokens). Each model is built for its input length (position embedding of that size), as SSAMBA did.

Every point runs in a fresh subprocess, so one point's allocations cannot hide in another's heap.
"Peak memory" means the same on both devices: weights + input + the transient peak of the forward passes.
- cuda: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, as SSAMBA measured.
- cpu: torch's CPU allocations are invisible to tracemalloc, so the process' resident memory is read:
  the peak RSS is reset right before the first forward (/proc/self/clear_refs, Linux >= 4.0) and
  VmHWM - VmRSS(at reset) is the growth; without that, ru_maxrss after the runs minus ru_maxrss after
  model construction. The growth includes allocator slack and thread buffers: what the process needed.
  The worker's data segment is capped at the memory budget, so an over-budget point fails cleanly
  instead of waking the OOM killer on a shared machine.

A model's series stops before the next length when that point is predicted (log-log line through its
last two points, slope clamped to [1, 2]; slope 2 from a single point) to exceed the memory budget or
the per-point time budget (warm-up + runs); the summary says where and why.

    python benchmarks/efficiency.py [--device cpu|cuda] [--max-tokens 22528] [--runs 5] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BATCH = 2
MEL_BINS = 128
FREQ_PATCHES = 8  # (128 - 16) // 16 + 1
FRAMES_PER_TIME_PATCH = 16
# label -> (named config, overrides)
MODELS: dict[str, tuple[str, dict]] = {
    "ssamba-tiny": ("ssamba-tiny", {}),
    "ssast-tiny-explicit": ("ssast-tiny", {"attention": "explicit"}),
    "ssast-tiny-sdpa": ("ssast-tiny", {"attention": "sdpa"}),
}
SSAMBA = "ssamba-tiny"
DEFAULT_MAX_TOKENS = 22528  # ~22k, SSAMBA's headline point (2816 time patches)
SMOKE_TOKENS = (16, 32)
SMOKE_DEPTH = 2
GIB = 1024**3
MIB = 1024**2


# ---------------------------------------------------------------------------------- worker
def _read_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _reset_peak_rss() -> tuple[str, int]:
    """Reset the peak-RSS mark if the kernel allows; returns (method, baseline bytes)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM after reset", _read_status_kib("VmRSS") * 1024
    except (OSError, KeyError):
        return "ru_maxrss delta", _maxrss_bytes()


def _peak_rss(method: str) -> int:
    return _read_status_kib("VmHWM") * 1024 if method == "VmHWM after reset" else _maxrss_bytes()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(spec: dict) -> dict:
    """One point, in this (fresh) process: build, warm up, time; report times and peak memory."""
    if spec["device"] == "cpu" and spec.get("memory_budget"):
        limit = int(spec["memory_budget"])
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    from ssamba_stream.model.registry import build_model

    name, overrides = MODELS[spec["model"]]
    if spec.get("depth"):
        overrides = {**overrides, "depth": spec["depth"]}
    frames = spec["tokens"] // FREQ_PATCHES * FRAMES_PER_TIME_PATCH
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(name, num_classes=50, target_length=frames, **overrides).eval().to(device)
    fbank = torch.randn(BATCH, frames, MEL_BINS, device=device)
    static = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers(), fbank))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    times = []
    with torch.no_grad():
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            method, baseline = "cuda max_memory_allocated", 0
        else:
            method, baseline = _reset_peak_rss()
        for _ in range(spec["warmup"] + spec["runs"]):
            start = time.perf_counter()
            model(fbank)
            sync()
            times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = static + max(0, _peak_rss(method) - baseline)
    timed = times[spec["warmup"] :]
    return {
        "status": "ok",
        "frames": frames,
        "median_s": statistics.median(timed),
        "runs_s": timed,
        "peak_bytes": peak,
        "static_bytes": static,
        "memory_method": method,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
    }


def _worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        result = measure(spec)
    except (RuntimeError, MemoryError) as exc:  # torch reports allocation failures as RuntimeError
        result = {"status": f"failed: {str(exc).splitlines()[0][:200]}"}
    print(json.dumps(result))


# ---------------------------------------------------------------------------------- planning
def extrapolate(xs: list[float], ys: list[float], x_next: float) -> float:
    """y at ``x_next`` on the log-log line through the last two points, slope clamped to [1, 2].

    Attention makes time and memory at most quadratic and everything is at least linear in length;
    from a single point the slope is taken as 2 (the cautious guess).
    """
    slope = 2.0
    if len(xs) >= 2 and ys[-2] > 0 and ys[-1] > 0 and xs[-1] != xs[-2]:
        slope = min(max(math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2]), 1.0), 2.0)
    return ys[-1] * (x_next / xs[-1]) ** slope


def token_lengths(max_tokens: int, start: int = 512) -> list[int]:
    """Doubling from ``start`` up to ``max_tokens``, and ``max_tokens`` itself (whole time patches)."""
    lengths = []
    tokens = start
    while tokens <= max_tokens:
        lengths.append(tokens)
        tokens *= 2
    last = max_tokens // FREQ_PATCHES * FREQ_PATCHES
    if last >= start and last not in lengths:
        lengths.append(last)
    return lengths


@dataclass
class Series:
    """One model's measured points and, if it stopped early, why."""

    model: str
    points: list[dict] = field(default_factory=list)
    stop_reason: str = ""

    def ok_points(self) -> list[dict]:
        return [p for p in self.points if p["status"] == "ok"]

    def predict(self, tokens: int, warmup: int, runs: int) -> tuple[float, float]:
        """(seconds for warm-up + runs, peak bytes) expected at ``tokens``."""
        ok = self.ok_points()
        xs = [p["tokens"] for p in ok]
        run_s = extrapolate(xs, [p["median_s"] for p in ok], tokens)
        return run_s * (warmup + runs), extrapolate(xs, [p["peak_bytes"] for p in ok], tokens)


def run_point(spec: dict, timeout_s: float) -> dict:
    """Measure one point in a fresh interpreter; a crash or timeout becomes the point's status."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"status": f"failed: {tail[:200]}"}
    return json.loads(lines[-1])


def run_series(model: str, lengths: list[int], args: argparse.Namespace, log) -> Series:
    series = Series(model)
    for tokens in lengths:
        if series.ok_points():
            seconds, peak = series.predict(tokens, args.warmup, args.runs)
            if peak > args.memory_budget:
                series.stop_reason = (
                    f"stopped before {tokens} tokens: predicted peak {peak / GIB:.1f} GiB > memory budget "
                    f"{args.memory_budget / GIB:.1f} GiB"
                )
            elif seconds > args.time_budget:
                series.stop_reason = (
                    f"stopped before {tokens} tokens: predicted {seconds:.0f} s for {args.warmup} warm-up + "
                    f"{args.runs} runs > time budget {args.time_budget:.0f} s per point"
                )
            if series.stop_reason:
                log(f"  {model}: {series.stop_reason}")
                break
        spec = {
            "model": model,
            "tokens": tokens,
            "runs": args.runs,
            "warmup": args.warmup,
            "device": args.device,
            "depth": SMOKE_DEPTH if args.smoke else None,
            "memory_budget": args.memory_budget,
        }
        point = {"model": model, "tokens": tokens, **run_point(spec, max(2 * args.time_budget, 120.0))}
        series.points.append(point)
        if point["status"] != "ok":
            series.stop_reason = f"stopped at {tokens} tokens: {point['status']}"
            log(f"  {model}: {series.stop_reason}")
            break
        log(
            f"  {model:20s} {tokens:6d} tokens  {point['median_s']:9.4f} s  {point['peak_bytes'] / MIB:10.1f} MiB"
        )
    else:
        series.stop_reason = f"measured every length up to {lengths[-1]} tokens"
    return series


# ---------------------------------------------------------------------------------- outputs
def _percent_less(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "—"
    return f"{100.0 * (1.0 - ours / theirs):.1f}"


def markdown_table(all_series: list[Series]) -> str:
    """Tokens x models: median time, peak memory, and SSAMBA's % faster / % less memory per SSAST form."""
    by_model = {s.model: {p["tokens"]: p for p in s.ok_points()} for s in all_series}
    lengths = sorted({t for points in by_model.values() for t in points})
    others = [s.model for s in all_series if s.model != SSAMBA]

    def value(model: str, tokens: int, key: str) -> float | None:
        point = by_model.get(model, {}).get(tokens)
        return None if point is None else point[key]

    header = ["tokens"]
    header += [f"{s.model} time (s)" for s in all_series]
    header += [f"{s.model} peak (MiB)" for s in all_series]
    for other in others:
        header += [f"vs {other}: % faster", f"vs {other}: % less memory"]
    rows = []
    for tokens in lengths:
        row = [str(tokens)]
        for s in all_series:
            t = value(s.model, tokens, "median_s")
            row.append("—" if t is None else f"{t:.4g}")
        for s in all_series:
            m = value(s.model, tokens, "peak_bytes")
            row.append("—" if m is None else f"{m / MIB:.1f}")
        for other in others:
            row.append(_percent_less(value(SSAMBA, tokens, "median_s"), value(other, tokens, "median_s")))
            row.append(_percent_less(value(SSAMBA, tokens, "peak_bytes"), value(other, tokens, "peak_bytes")))
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


CSV_FIELDS = [
    "model",
    "tokens",
    "frames",
    "status",
    "median_s",
    "runs_s",
    "peak_mib",
    "static_mib",
    "memory_method",
    "device",
    "device_name",
    "threads",
    "torch",
]


def write_csv(path: Path, all_series: list[Series], device: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        for series in all_series:
            for p in series.points:
                ok = p["status"] == "ok"
                writer.writerow(
                    {
                        "model": p["model"],
                        "tokens": p["tokens"],
                        "status": p["status"],
                        "device": device,
                        "frames": p["tokens"] // FREQ_PATCHES * FRAMES_PER_TIME_PATCH,
                        "median_s": f"{p['median_s']:.6f}" if ok else "",
                        "runs_s": ";".join(f"{t:.6f}" for t in p["runs_s"]) if ok else "",
                        "peak_mib": f"{p['peak_bytes'] / MIB:.2f}" if ok else "",
                        "static_mib": f"{p['static_bytes'] / MIB:.2f}" if ok else "",
                        **{k: p.get(k, "") for k in ("memory_method", "device_name", "threads", "torch")},
                    }
                )


def write_plots(out: Path, all_series: list[Series]) -> list[Path]:
    """time_vs_tokens.png and memory_vs_tokens.png, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = []
    for key, scale, ylabel, filename in (
        ("median_s", 1.0, "median inference time (s), batch 2", "time_vs_tokens.png"),
        ("peak_bytes", 1.0 / MIB, "peak memory (MiB)", "memory_vs_tokens.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for series in all_series:
            ok = series.ok_points()
            ax.plot([p["tokens"] for p in ok], [p[key] * scale for p in ok], marker="o", label=series.model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        paths.append(out / filename)
    return paths


def summary_text(all_series: list[Series], args: argparse.Namespace) -> str:
    first = next((p for s in all_series for p in s.ok_points()), {})
    notes = [
        f"device: {args.device} ({first.get('device_name', '?')}), torch {first.get('torch', '?')}, "
        f"{first.get('threads', '?')} threads, fp32, no_grad, batch {BATCH}, {args.warmup} warm-up + "
        f"{args.runs} runs, median" + (f", smoke (depth {SMOKE_DEPTH})" if args.smoke else ""),
        "tokens = patch tokens (8 frequency x frames/16 time); frames = tokens / 8 * 16; SSAMBA adds 1, SSAST 2 extra tokens",
        f"peak memory = weights + input + transient peak, by {first.get('memory_method', '?')}",
        "% faster = 100 * (1 - t_SSAMBA / t_SSAST); % less memory = 100 * (1 - m_SSAMBA / m_SSAST); negative = SSAMBA worse",
        f"budgets: {args.memory_budget / GIB:.1f} GiB memory, {args.time_budget:.0f} s per point",
    ]
    notes += [f"{s.model}: {s.stop_reason}" for s in all_series]
    return (
        "# Inference efficiency: SSAMBA vs SSAST\n\n"
        + markdown_table(all_series)
        + "\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n"
    )


# ---------------------------------------------------------------------------------- main
def _default_memory_budget(device: str) -> int:
    """80% of the memory free now (shared machines) on CPU; 90% of the GPU's memory on CUDA."""
    if device == "cuda":
        import torch

        return int(0.9 * torch.cuda.get_device_properties(0).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(0.8 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds per point (warm-up + runs)")
    parser.add_argument(
        "--memory-budget-gib",
        type=float,
        default=None,
        help="default: 80%% of available RAM (cpu), 90%% of GPU memory (cuda)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"depth-{SMOKE_DEPTH} models at {SMOKE_TOKENS} tokens, 2 runs"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if args.smoke:
        args.runs = min(args.runs, 2)
    args.memory_budget = (
        int(args.memory_budget_gib * GIB) if args.memory_budget_gib else _default_memory_budget(args.device)
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        _worker_main(args.worker)
        return 0
    lengths = list(SMOKE_TOKENS) if args.smoke else token_lengths(args.max_tokens)
    if not lengths:
        print(f"--max-tokens {args.max_tokens} is below the first length (512)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"lengths {lengths}; budgets {args.memory_budget / GIB:.1f} GiB, {args.time_budget:.0f} s per point",
        flush=True,
    )
    all_series = [run_series(model, lengths, args, lambda msg: print(msg, flush=True)) for model in MODELS]
    write_csv(args.out / "efficiency.csv", all_series, args.device)
    write_plots(args.out, all_series)
    text = summary_text(all_series, args)
    (args.out / "efficiency.md").write_text(text)
    print(
        "\n"
        + text
        + f"\nwritten to {args.out}/ (efficiency.md, efficiency.csv, time_vs_tokens.png, memory_vs_tokens.png)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
