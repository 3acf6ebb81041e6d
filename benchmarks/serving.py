"""Serving cost: CPU per stream and p99 latency of the batching engine against one session per stream.

N live streams (1, 8, 32, 128) each deliver one block of audio (160 ms) every 160 ms, at random
phases, for ``--seconds`` of audio: the example recording, shifted per stream. Both ways run in one
process on one CPU thread, interleaved a second of audio at a time (``side_by_side``), on the
bundled model:
- batched: ``MultiStreamEngine`` stepped by the server's policy (BatchScheduler: a ready block
  waits for the others at most ``--max-wait-ms`` from its arrival, then one session call runs for
  every ready stream);
- per stream: one batch-1 session call per block per stream, as one session (or process) per
  stream runs. The per-stream sessions share one loaded graph (128 copies would take gigabytes);
  each keeps its own state and detector.
Arrivals follow a simulated clock, so the run takes only the compute time: each call's measured
CPU time advances the clock, a block waits while the one thread is busy, and its latency is from
its arrival to the end of the call that gave its result. Prints a Markdown table, and checks that
both ways give the same events. ``--backend`` chooses the engine's backend (``openvino`` fuses the
scan's elementwise chains), ``--per-stream-backend`` the sessions'; both default to onnxruntime.

    python benchmarks/serving.py [--streams 1 8 32 128] [--seconds 10] [--max-wait-ms 50] [--backend openvino]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Generator

import numpy as np

from ssamba_stream.audio import load_audio
from ssamba_stream.kws import Detector, DetectorConfig
from ssamba_stream.runtime.session import StreamingSession
from ssamba_stream.serving.engine import MultiStreamEngine
from ssamba_stream.spotter import ASSETS, DEFAULT_MODEL

EXAMPLE = ASSETS.parents[1] / "examples" / "keywords.wav"


def _arrivals(streams: int, blocks: int, block_seconds: float, seed: int) -> list[tuple[float, int, int]]:
    """(time, stream, block) of every block, in time order: each stream at its own random phase."""
    phases = np.random.default_rng(seed).uniform(0, block_seconds, streams)
    return sorted((phases[i] + (k + 1) * block_seconds, i, k) for i in range(streams) for k in range(blocks))


def _audio(streams: int, blocks: int, chunk: int) -> list[np.ndarray]:
    example = load_audio(EXAMPLE, 16000)
    return [np.roll(example, -int(i * 0.37 * 16000))[: blocks * chunk] for i in range(streams)]


def batched(
    model, audio, arrivals, max_wait: float, backend: str
) -> Generator[float, None, tuple[float, list[float], list[list], float]]:
    """CPU seconds, latencies, events per stream and the mean batch of the engine under the server's
    policy; yields its simulated clock after each call (see ``side_by_side``)."""
    engine = MultiStreamEngine(model, backend=backend)
    for size in (1, 2, 4, 8, 16):  # compile-on-first-use backends (openvino) compile outside the timing
        zeros = {"pcm": np.zeros((size, engine.spec.chunk_samples), np.float32)}
        engine.backend.run(zeros | {s.name: s.zeros(size) for s in engine.spec.state})
    chunk = engine.spec.chunk_samples
    streams = [engine.open() for _ in audio]
    index = {id(s): i for i, s in enumerate(streams)}
    arrived: dict[tuple[int, int], float] = {}
    events: list[list] = [[] for _ in audio]
    latencies, sizes, cpu, clock, next_arrival = [], [], 0.0, 0.0, 0

    def feed_until(t: float) -> None:
        nonlocal next_arrival
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] <= t:
            when, i, k = arrivals[next_arrival]
            streams[i].feed(audio[i][k * chunk : (k + 1) * chunk])
            arrived[(i, k)] = when
            next_arrival += 1

    since = 0.0  # every ready block arrived after this
    while next_arrival < len(arrivals) or engine.ready:
        if not engine.ready:
            clock = since = max(clock, arrivals[next_arrival][0])
            feed_until(clock)
        clock = max(clock, since + max_wait)  # the bounded wait for streams still filling a block (live: all)
        feed_until(clock)
        since = clock
        started = time.process_time()
        results = engine.step()
        spent = time.process_time() - started
        cpu, clock = cpu + spent, clock + spent
        feed_until(clock)
        sizes.append(len(results))
        for result in results:
            i = index[id(result.stream)]
            latencies.append(clock - arrived[(i, result.block)])
            events[i] += result.events
        yield clock
    return cpu, latencies, events, float(np.mean(sizes))


def per_stream(
    model, audio, arrivals, backend: str
) -> Generator[float, None, tuple[float, list[float], list[list]]]:
    """CPU seconds, latencies and events per stream with one batch-1 session per stream; yields its
    simulated clock after each block."""
    first = StreamingSession(model, backend=backend)
    sessions = [first] + [copy.copy(first) for _ in audio[1:]]  # own state, one loaded graph
    for session in sessions:
        session.reset()
    spec = first.spec
    config = DetectorConfig.from_sidecar(spec.detector)
    detectors = [Detector(spec.labels, spec.block_seconds, config) for _ in audio]
    chunk = spec.chunk_samples
    events: list[list] = [[] for _ in audio]
    latencies, cpu, clock = [], 0.0, 0.0
    for when, i, k in arrivals:
        clock = max(clock, when)  # the thread takes blocks in arrival order
        started = time.process_time()
        posteriors = sessions[i].process(audio[i][k * chunk : (k + 1) * chunk])
        events[i] += detectors[i].update(posteriors)
        spent = time.process_time() - started
        cpu, clock = cpu + spent, clock + spent
        latencies.append(clock - when)
        yield clock
    return cpu, latencies, events


def side_by_side(*runs: Generator[float, None, tuple], quantum: float = 1.0) -> list[tuple]:
    """Run the simulations interleaved: the one whose simulated clock is behind runs until it is
    ``quantum`` seconds ahead. Each second or so of audio is measured both ways within moments of
    each other, so the machine's drift (other jobs, clocks) falls on both alike, and each way still
    runs many calls in a row (its caches warm, as when it has the machine). Their results in order."""
    clocks, results = [0.0] * len(runs), [None] * len(runs)
    live = set(range(len(runs)))
    while live:
        behind = min(live, key=clocks.__getitem__)
        until = min((clocks[i] for i in live if i != behind), default=float("inf")) + quantum
        try:
            while clocks[behind] < until:
                clocks[behind] = next(runs[behind])
        except StopIteration as finished:
            results[behind] = finished.value
            live.remove(behind)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    parser.add_argument("--max-wait-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="step graph with a free batch dimension")
    parser.add_argument("--backend", default="onnxruntime", help="the batching engine's backend")
    parser.add_argument(
        "--per-stream-backend", default="onnxruntime", help="the per-stream sessions' backend"
    )
    args = parser.parse_args()
    spec = StreamingSession(args.model).spec
    blocks = int(args.seconds / spec.block_seconds)
    audio_seconds = blocks * spec.block_seconds
    print(f"{platform.processor() or platform.machine()}, 1 thread; {audio_seconds:.2f} s of audio per stream, "
          f"blocks of {spec.block_seconds * 1000:.0f} ms, bounded wait {args.max_wait_ms:g} ms; batched on "
          f"{args.backend}, per stream on {args.per_stream_backend}\n")  # fmt: skip
    print("| streams | CPU ms per stream-second, batched | per stream | ratio | p99 latency batched | per stream "
          "| mean batch | events equal |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for count in args.streams:
        audio = _audio(count, blocks, spec.chunk_samples)
        arrivals = _arrivals(count, blocks, spec.block_seconds, args.seed)
        (cpu_b, lat_b, events_b, batch), (cpu_s, lat_s, events_s) = side_by_side(
            batched(args.model, audio, arrivals, args.max_wait_ms / 1000, args.backend),
            per_stream(args.model, audio, arrivals, args.per_stream_backend),
        )
        same = all(
            [(e.time, e.label) for e in a] == [(e.time, e.label) for e in b]
            for a, b in zip(events_b, events_s, strict=True)
        )
        per_b, per_s = 1000 * cpu_b / count / audio_seconds, 1000 * cpu_s / count / audio_seconds
        print(f"| {count} | {per_b:.2f} | {per_s:.2f} | {per_s / per_b:.1f}x | {1000 * np.percentile(lat_b, 99):.0f} ms "
              f"| {1000 * np.percentile(lat_s, 99):.0f} ms | {batch:.1f} | {'yes' if same else 'NO'} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
