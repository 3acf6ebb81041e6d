"""Streaming cost: real-time factor and per-block latency of the step graph, against sliding-window recompute.

For each model (the streaming ssamba-tiny: embed 192, depth 24, frame tokens, B=8; and ssamba-kws)
and each backend, in one run on one machine:
- the streaming step: one call per block of B tokens (B * 20 ms of audio), state carried;
- the alternative a user would otherwise write: re-run the offline model (frontend + encoder + head)
  on the last 1 s of audio every block hop, same backend and threads.
Prints a Markdown table: RTF (compute time / audio time), p50/p99 latency per call, and the ratio of
compute per second of audio (sliding window / streaming).

    python benchmarks/streaming.py [--seconds 60] [--threads 1 2] [--scan segsum unrolled] [--smoke]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ssamba_export.graph_scan import GRAPH_SCANS
from ssamba_export.onnx_export import export_onnx
from ssamba_export.verify import test_signal
from ssamba_stream.model.checkpoint import save_model
from ssamba_stream.model.ssamba import SSAMBA, build_model
from ssamba_stream.runtime.session import StreamingSession

MODELS = {
    "ssamba-tiny-stream": {"embed_dim": 192, "depth": 24},
    "ssamba-kws": {},
}


def scan_free(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
              return_last_state=False, **_):
    """Not a scan: the cheapest op with the scan's shapes, so that (time with the real scan - time
    with this) bounds what any fused scan kernel (ORT custom op, TensorRT plugin) could save."""
    y = u * delta if z is None else u * z
    if not return_last_state:
        return y
    state = initial_state if initial_state is not None else u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    return y, state


GRAPH_SCANS["free"] = scan_free  # benchmark-only entry: never exported for use


class OfflineWindow(nn.Module):
    """What a user without streaming runs every hop: the whole model on the last window of audio."""

    def __init__(self, model: SSAMBA) -> None:
        super().__init__()
        self.model = model.eval()
        self.frontend = model.make_frontend()

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(self.frontend(pcm)), dim=-1)


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


def measure(name: str, overrides: dict, scan: str, threads: int, seconds: float, workdir: Path) -> dict:
    torch.manual_seed(0)
    model = build_model("ssamba-kws", num_classes=12, **overrides).eval()
    checkpoint = save_model(model, workdir / f"{name}-ckpt")
    graph = workdir / f"{name}-{scan}.onnx"
    if not graph.exists():
        export_onnx(checkpoint, graph, scan=scan)
    session = StreamingSession(graph, threads=threads)
    chunk = session.spec.chunk_samples
    audio = test_signal(seconds)
    blocks = [audio[i : i + chunk] for i in range(0, audio.size - chunk + 1, chunk)]
    next_block = itertools.cycle(blocks).__next__

    def stream_call() -> None:
        session.process(next_block())

    step_times = _latencies(stream_call, len(blocks))

    window = workdir / f"{name}-window.onnx"
    if not window.exists():
        for layer in model.v.layers:  # the training scan does not trace; use the graph form
            layer.mixer.scan_fn = GRAPH_SCANS["cumsum"]
        torch.onnx.export(OfflineWindow(model), (torch.zeros(1, 16000),), str(window), input_names=["pcm"], dynamo=False)
    offline = ort.InferenceSession(str(window), _session_options(threads), providers=["CPUExecutionProvider"])
    windows = [audio[None, max(0, end - 16000) : end] for end in range(16000, audio.size, chunk)]
    next_window = itertools.cycle(windows).__next__

    def window_call() -> None:
        offline.run(None, {"pcm": next_window()})

    window_times = _latencies(window_call, min(len(windows), len(blocks)))
    hop = chunk / session.sample_rate
    return {
        "model": name, "params": sum(p.numel() for p in model.parameters()), "scan": scan, "threads": threads,
        "rtf": step_times.mean() / hop, "p50": np.median(step_times), "p99": np.percentile(step_times, 99),
        "window_rtf": window_times.mean() / hop, "window_p50": np.median(window_times), "blocks": len(blocks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio streamed per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--scan", nargs="+", default=["unrolled"], choices=["unrolled", "cumsum", "segsum", "free"],
        help="graph scan form; 'free' replaces the scan by a no-op to bound a fused kernel's gain",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.models = 2.0, ["ssamba-kws"]
    print(f"device: {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, torch {torch.__version__}")
    print("| model | params | scan | threads | stream RTF | p50 ms | p99 ms | 1 s window RTF | window p50 ms | compute ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for scan in args.scan:
                for threads in args.threads:
                    r = measure(name, MODELS[name], scan, threads, args.seconds, Path(tmp))
                    print(
                        f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['scan']} | {r['threads']} | {r['rtf']:.4f} | "
                        f"{r['p50'] * 1e3:.2f} | {r['p99'] * 1e3:.2f} | {r['window_rtf']:.4f} | "
                        f"{r['window_p50'] * 1e3:.2f} | {r['window_rtf'] / r['rtf']:.1f}x |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
