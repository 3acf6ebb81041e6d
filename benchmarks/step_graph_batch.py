"""CPU per stream and block of step graphs at several batch sizes, measured interleaved in one run.

For changes to the exported step graph, or to the backend that runs it, that should cost less when
one call serves many streams (``MultiStreamEngine``): each graph (free batch dimension,
``ssamba-export onnx --batch 0``) runs the same random feeds, round by round, on one thread of its
backend (onnxruntime unless ``@BACKEND`` names another); the figure is the median over rounds of
process CPU time per call divided by the batch. The outputs are compared with the first's first.

    python benchmarks/step_graph_batch.py old=before.onnx new=ssamba_stream/assets/kws12/model.onnx
    python benchmarks/step_graph_batch.py ort=M.onnx native=M.onnx@onnxruntime-native
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ssamba_stream.runtime.backends import Backend, make_backend
from ssamba_stream.runtime.spec import StreamModelSpec, load_spec


def open_graph(text: str) -> tuple[Backend, StreamModelSpec]:
    """``PATH`` or ``PATH@BACKEND`` on one thread."""
    path, _, backend = text.partition("@")
    spec = load_spec(Path(path))
    return make_backend(backend or "onnxruntime", Path(path), spec, 1), spec


def feeds(spec: StreamModelSpec, batch: int) -> dict[str, np.ndarray]:
    """Random audio and small random states for ``batch`` streams."""
    rng = np.random.default_rng(0)
    out = {"pcm": (rng.standard_normal((batch, spec.chunk_samples)) * 0.1).astype(np.float32)}
    for state in spec.state:
        zeros = state.zeros(batch)
        out[state.name] = (rng.standard_normal(zeros.shape) * 0.01).astype(np.float32)
    return out


def cpu_ms_per_stream(graph: Backend, inputs: dict[str, np.ndarray], batch: int) -> float:
    calls = max(3, 96 // batch)
    started = time.process_time()
    for _ in range(calls):
        graph.run(inputs)
    return (time.process_time() - started) / calls / batch * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "graphs", nargs="+", help="NAME=PATH[@BACKEND] of step graphs with a free batch dimension"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    graphs = {name: open_graph(text) for name, text in (text.split("=", 1) for text in args.graphs)}
    first, spec = next(iter(graphs.values()))
    inputs = feeds(spec, 4)
    expected = first.run(inputs)
    for name, (graph, _) in graphs.items():
        got = graph.run(inputs)
        difference = max(float(np.abs(value - got[key]).max()) for key, value in expected.items())
        print(f"{name}: largest output difference from the first graph at batch 4: {difference:.2e}")
    names = list(graphs)
    print(f"| batch | {' | '.join(f'{n} ms CPU per stream-block' for n in names)} | {names[0]} / each |")
    print(f"|---|{'---|' * len(names)}---|")
    for batch in args.batch:
        inputs = feeds(spec, batch)
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, (graph, _) in graphs.items():
                times[name].append(cpu_ms_per_stream(graph, inputs, batch))
        medians = {name: float(np.median(values)) for name, values in times.items()}
        ratios = " / ".join(f"{medians[names[0]] / medians[n]:.2f}" for n in names[1:])
        print(f"| {batch} | {' | '.join(f'{medians[n]:.3f}' for n in names)} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
