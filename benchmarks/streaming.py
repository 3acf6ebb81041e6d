"""Streaming cost: real-time factor and per-block latency of the step graph, against sliding-window recompute.

For each model (the streaming ssamba-tiny: embed 192, depth 24, frame tokens, B=8; and ssamba-kws)
and each backend (torch eager, onnxruntime CPU; onnxruntime CUDA and TensorRT where a GPU is), in
one run on one machine:
- the streaming step: one call per block of B tokens (B * 20 ms of audio), state carried;
- the alternative a user would otherwise write: re-run the offline model (frontend + encoder + head)
  on the last 1 s of audio every block hop, same backend and threads (TensorRT: the window runs in
  onnxruntime CUDA).
Prints a Markdown table: RTF (compute time / audio time), p50/p99 latency per call, the ratio of
compute per second of audio (sliding window / streaming), the step graph's FLOPs per second of
audio, and the fraction of the device's peak the step achieves at its median latency (peak: the
best sustained fp32 GEMM on the same threads, or the GPU's, measured in the same run).

    python benchmarks/streaming.py [--seconds 60] [--threads 1 2] [--backends onnxruntime torch]
                                   [--scan block free] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ssamba_export.flops import graph_flops, measured_peak_flops
from ssamba_export.onnx_export import export_onnx
from ssamba_export.verify import test_signal
from ssamba_stream.model.block_scan import BlockScan
from ssamba_stream.model.checkpoint import save_model
from ssamba_stream.model.registry import build_model
from ssamba_stream.model.ssamba import SSAMBA
from ssamba_stream.runtime.backends import backend_names
from ssamba_stream.runtime.session import StreamingSession

MODELS = {
    "ssamba-tiny-stream": {"embed_dim": 192, "depth": 24},
    "ssamba-kws": {},
}


def block_scan_free(u, delta, A, B, C, D, z, initial_state):
    """Not a scan: the cheapest op with the block scan's shapes, so that (time with the real scan -
    time with this) bounds what any fused scan kernel (ORT custom op, TensorRT plugin) could save."""
    return u * z, initial_state


@contextlib.contextmanager
def block_scan_form(form: str):
    """Export under the block scan ``form``: "block" (the real one) or "free" (``block_scan_free``)."""
    if form == "block":
        yield
        return
    real = BlockScan.forward
    BlockScan.forward = lambda self, *inputs: block_scan_free(*inputs)
    try:
        yield
    finally:
        BlockScan.forward = real


class OfflineWindow(nn.Module):
    """What a user without streaming runs every hop: the whole model on the last window of audio."""

    def __init__(self, model: SSAMBA, scan: str = "auto") -> None:
        super().__init__()
        self.model = model.eval()
        self.frontend = model.make_frontend()
        self.mode = model.scan_mode(scan=scan)

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(self.frontend(pcm), mode=self.mode), dim=-1)


BACKENDS = backend_names()
GPU_BACKENDS = ("onnxruntime-cuda", "tensorrt")


def gpu_missing(backend: str) -> str | None:
    """Why a GPU backend cannot run here, or None (always None for a CPU backend)."""
    if backend not in GPU_BACKENDS:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDA provider (pip install onnxruntime-gpu on a GPU machine)"
    if backend == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "TensorRT is not installed"
    return None


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _latencies(call, count: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        call()
    times = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times


def _step_feeds(session: StreamingSession) -> dict[str, np.ndarray]:
    spec = session.spec
    return {"pcm": np.zeros((1, spec.chunk_samples), np.float32), **{t.name: t.zeros(1) for t in spec.state}}


def _window_runner(model: SSAMBA, backend: str, threads: int, path: Path):
    """A callable running the offline model on one 1 s window, on ``backend`` (see module doc)."""
    if backend == "torch":
        window = OfflineWindow(model)
        torch.set_num_threads(threads)

        def run_torch(pcm: np.ndarray) -> None:
            with torch.no_grad():
                window(torch.from_numpy(pcm))

        return run_torch
    if not path.exists():  # the training scan does not trace; export the graph form
        window = OfflineWindow(model, scan="cumsum")
        torch.onnx.export(window, (torch.zeros(1, 16000),), str(path), input_names=["pcm"], dynamo=False)
    # The sliding-window baseline of a CPU backend runs in onnxruntime on the CPU.
    providers = ["CUDAExecutionProvider"] if backend in GPU_BACKENDS else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), _session_options(threads), providers=providers)
    return lambda pcm: session.run(None, {"pcm": pcm})


def _step_model(checkpoint: Path, graph: Path, backend: str) -> Path:
    """The file a StreamingSession of ``backend`` loads: the ONNX graph, or a TensorRT engine of it."""
    if backend != "tensorrt":
        return graph
    from ssamba_export.tensorrt_build import build_engine

    plan = graph.with_suffix(".plan")
    if not plan.exists():
        build_engine(graph, plan)
    return plan


def measure(name: str, overrides: dict, form: str, backend: str, threads: int, seconds: float, workdir: Path,
            peak: float) -> dict:  # fmt: skip
    torch.manual_seed(0)
    model = build_model("ssamba-kws", num_classes=12, **overrides).eval()
    checkpoint = save_model(model, workdir / f"{name}-ckpt")
    graph = workdir / f"{name}-{form}.onnx"
    if not graph.exists():
        with block_scan_form(form):
            export_onnx(checkpoint, graph)
    session = StreamingSession(_step_model(checkpoint, graph, backend), backend=backend, threads=threads)
    chunk = session.spec.chunk_samples
    audio = test_signal(seconds)
    blocks = [audio[i : i + chunk] for i in range(0, audio.size - chunk + 1, chunk)]
    next_block = itertools.cycle(blocks).__next__

    def stream_call() -> None:
        session.process(next_block())

    step_times = _latencies(stream_call, len(blocks))

    run_window = _window_runner(model, backend, threads, workdir / f"{name}-window.onnx")
    windows = [audio[None, max(0, end - 16000) : end] for end in range(16000, audio.size, chunk)]
    next_window = itertools.cycle(windows).__next__
    window_times = _latencies(lambda: run_window(next_window()), min(len(windows), len(blocks)))
    hop = chunk / session.sample_rate
    step_flops = sum(graph_flops(graph, _step_feeds(session)).values())
    return {
        "model": name, "params": sum(p.numel() for p in model.parameters()), "scan": form, "backend": backend,
        "threads": threads, "rtf": step_times.mean() / hop, "p50": np.median(step_times),
        "p99": np.percentile(step_times, 99), "window_rtf": window_times.mean() / hop,
        "window_p50": np.median(window_times), "blocks": len(blocks), "flops_per_second": step_flops / hop,
        "peak_fraction": step_flops / np.median(step_times) / peak,
    }  # fmt: skip


def gpu_peak_flops() -> float:
    """Best sustained fp32 GEMM rate of the GPU (TF32 off), for the GPU backends' peak fraction."""
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(8192, 8192, device="cuda")
    torch.mm(a, a)
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(10):
        start = time.perf_counter()
        torch.mm(a, a)
        torch.cuda.synchronize()
        best = max(best, 2 * 8192**3 / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio streamed per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--scan",
        nargs="+",
        default=["block"],
        choices=["block", "free"],
        help="'block': the step graph's block scan; 'free' replaces it by a no-op to bound a fused kernel's gain",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=["onnxruntime"], choices=BACKENDS)
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.models = 2.0, ["ssamba-kws"]
    print(
        f"device: {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, torch {torch.__version__}"
    )
    print("| model | params | backend | scan | threads | stream RTF | p50 ms | p99 ms | 1 s window RTF | window p50 ms "
          "| compute ratio | MFLOP per s audio | % of peak |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    peaks: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, name, form, threads in itertools.product(
            args.backends, args.models, args.scan, args.threads
        ):
            missing = gpu_missing(backend)
            if missing:
                print(f"| {name} | | {backend} | {form} | {threads} | skipped: {missing} |||||||||")
                continue
            on_gpu = backend in GPU_BACKENDS
            key = ("gpu", 0) if on_gpu else ("cpu", threads)
            if key not in peaks:
                peaks[key] = gpu_peak_flops() if on_gpu else measured_peak_flops(threads)
                print(
                    f"peak {key[0]} ({key[1]} threads): {peaks[key] / 1e9:.1f} GFLOP/s fp32 GEMM", flush=True
                )
            r = measure(name, MODELS[name], form, backend, threads, args.seconds, Path(tmp), peaks[key])
            print(
                f"| {r['model']} | {r['params'] / 1e6:.2f}M | {backend} | {r['scan']} | {r['threads']} | "
                f"{r['rtf']:.4f} | {r['p50'] * 1e3:.2f} | {r['p99'] * 1e3:.2f} | {r['window_rtf']:.4f} | "
                f"{r['window_p50'] * 1e3:.2f} | {r['window_rtf'] / r['rtf']:.1f}x | "
                f"{r['flops_per_second'] / 1e6:.0f} | {100 * r['peak_fraction']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
