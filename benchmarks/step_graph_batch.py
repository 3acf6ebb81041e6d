"""CPU per stream and block of step graphs at several batch sizes, measured interleaved in one run.

For changes to the exported step graph that should cost less when one call serves many streams
(``MultiStreamEngine``): each graph (free batch dimension, ``ssamba-export onnx --batch 0``) runs the
same random feeds, round by round, on one onnxruntime thread; the figure is the median over rounds
of process CPU time per call divided by the batch. The graphs' outputs are compared first.

    python benchmarks/step_graph_batch.py old=before.onnx new=ssamba_stream/assets/kws12/model.onnx
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(graph: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Random audio and small random states for ``batch`` streams."""
    rng = np.random.default_rng(0)
    out = {}
    for item in graph.get_inputs():
        shape = [batch if not isinstance(size, int) else size for size in item.shape]
        out[item.name] = (rng.standard_normal(shape) * (0.1 if item.name == "pcm" else 0.01)).astype(
            np.float32
        )
    return out


def cpu_ms_per_stream(graph: ort.InferenceSession, inputs: dict[str, np.ndarray], batch: int) -> float:
    calls = max(3, 96 // batch)
    started = time.process_time()
    for _ in range(calls):
        graph.run(None, inputs)
    return (time.process_time() - started) / calls / batch * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("graphs", nargs="+", help="NAME=PATH of step graphs with a free batch dimension")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    graphs = {name: session(path) for name, path in (text.split("=", 1) for text in args.graphs)}
    first = next(iter(graphs.values()))
    for name, graph in graphs.items():
        inputs = feeds(first, 4)
        difference = max(
            float(np.abs(a - b).max())
            for a, b in zip(first.run(None, inputs), graph.run(None, inputs), strict=True)
        )
        print(f"{name}: largest output difference from the first graph at batch 4: {difference:.2e}")
    names = list(graphs)
    print(f"| batch | {' | '.join(f'{n} ms CPU per stream-block' for n in names)} | {names[0]} / each |")
    print(f"|---|{'---|' * len(names)}---|")
    for batch in args.batch:
        inputs = feeds(first, batch)
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, graph in graphs.items():
                times[name].append(cpu_ms_per_stream(graph, inputs, batch))
        medians = {name: float(np.median(values)) for name, values in times.items()}
        ratios = " / ".join(f"{medians[names[0]] / medians[n]:.2f}" for n in names[1:])
        print(f"| {batch} | {' | '.join(f'{medians[n]:.3f}' for n in names)} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
