"""The multi-stream engine gives each stream exactly what a single-stream KeywordSpotter gives it.

Streams of different audio, rates and sample formats join and leave at random moments and are fed
in random chunk sizes; every block of every stream goes through batched session calls. Each must
get the same posteriors (within 1e-5) and the same events as an independent spotter fed the same
chunks.
"""

from pathlib import Path

import numpy as np
import pytest
import soxr

from ssamba_stream.audio import load_audio
from ssamba_stream.kws import detect
from ssamba_stream.serving.engine import MultiStreamEngine
from ssamba_stream.spotter import KeywordSpotter

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "keywords.wav"


def _as_format(audio: np.ndarray, rate: int, kind: str) -> np.ndarray:
    """16 kHz float audio as a client might send it: resampled, int16/int32/float, mono or stereo."""
    audio = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
    if kind == "int16":
        return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if kind == "stereo-int32":
        stereo = np.clip(np.stack([audio, audio * 0.5], axis=1), -1, 1).astype(np.float64)
        return (stereo * (2**31 - 1)).astype(np.int32)
    return audio.astype(np.float32)


def _streams(example: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Six different streams: the example rotated, scaled, resampled and in other sample formats."""
    specs = [(0.0, 1.0, 16000, "float"), (3.1, 0.7, 8000, "int16"), (11.5, 1.0, 44100, "stereo-int32"),
             (7.0, 0.5, 16000, "int16"), (19.3, 1.2, 48000, "float"), (0.0, 1.0, 22050, "int16")]  # fmt: skip
    result = []
    for shift, gain, rate, kind in specs:
        audio = np.roll(example, -int(shift * 16000)) * gain
        result.append((_as_format(audio, rate, kind), rate))
    return result


def _chunks(audio: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    cuts = np.cumsum(rng.integers(1, 6000, size=len(audio) // 500))
    return np.split(audio, cuts[cuts < len(audio)])


def _reference(chunks: list[np.ndarray], rate: int, blocks: int | None = None):
    """Posteriors and events of an independent single-stream spotter fed the same chunks."""
    spotter = KeywordSpotter()
    posteriors = [spotter.posteriors(chunk, rate) for chunk in chunks] + [
        spotter.posteriors(chunks[0][:0], rate, True)
    ]
    posteriors = np.concatenate(posteriors)[:blocks]
    return posteriors, detect(posteriors, spotter.labels, spotter.block_seconds, spotter.detector.config)


def test_streams_joining_and_leaving_get_what_independent_spotters_get(cpu_backend):
    # The reference spotters run onnxruntime; with openvino the engine's batches of 1-6 streams run as
    # compiled batches of 1, 2 and 4, whose fused kernels round differently (posteriors within 1e-4).
    tolerance = 1e-4 if cpu_backend == "openvino" else 1e-5
    rng = np.random.default_rng(0)
    streams = _streams(load_audio(EXAMPLE, 16000))
    chunks = [_chunks(audio, rng) for audio, _ in streams]
    engine = MultiStreamEngine(backend=cpu_backend)
    joins = [0, 0, 5, 12, 40, 200]  # the step at which each stream joins; stream 3 leaves at step 150
    handles: dict[int, object] = {}
    sent = [0] * len(streams)
    results: dict[int, list] = {i: [] for i in range(len(streams))}
    batch_sizes = []
    step = 0

    def feeding(i: int) -> bool:
        return i not in handles or (handles[i].open and not handles[i].finished)

    while any(feeding(i) for i in range(len(streams))) or engine.ready:
        for i, (_, rate) in enumerate(streams):
            if joins[i] == step:
                handles[i] = engine.open(rate)
        if step == 150:
            engine.close(handles[3])
        for i in rng.permutation(len(streams)):  # each open stream gets 0-3 chunks per step
            stream = handles.get(i)
            if stream is None or not stream.open:
                continue
            for _ in range(rng.integers(0, 4)):
                if sent[i] < len(chunks[i]):
                    stream.feed(chunks[i][sent[i]])
                    sent[i] += 1
                elif not stream.finished:
                    stream.finish()
        ready = len(engine.ready)
        for result in engine.step():
            results[next(i for i, s in handles.items() if s is result.stream)].append(result)
        batch_sizes.append(ready)
        step += 1
    assert max(batch_sizes) >= 5  # the streams really went through the graph together

    events_seen = 0
    for i, (_, rate) in enumerate(streams):
        got = results[i]
        assert [r.block for r in got] == list(range(len(got)))
        posteriors, events = _reference(chunks[i][: sent[i]], rate, len(got) if i == 3 else None)
        assert len(got) == len(posteriors) and len(got) > 100
        np.testing.assert_allclose(np.array([r.posteriors for r in got]), posteriors, atol=tolerance)
        engine_events = [e for r in got for e in r.events]
        assert [(e.time, e.label) for e in engine_events] == [(e.time, e.label) for e in events]
        assert np.allclose([e.score for e in engine_events], [e.score for e in events], atol=tolerance)
        events_seen += len(events)
    assert events_seen >= 20


def test_a_stream_may_listen_for_some_keywords_only():
    audio = load_audio(EXAMPLE, 16000)
    engine = MultiStreamEngine()
    every, some = engine.open(), engine.open(keywords=["go", "left"])
    for stream in (every, some):
        stream.feed(audio)
        stream.finish()
    results = engine.drain()
    heard = {s: [e.label for r in results if r.stream is s for e in r.events] for s in (every, some)}
    assert {"down", "yes", "go", "left"} <= set(heard[every])
    assert heard[some] == ["go", "left"]
    with pytest.raises(Exception, match="marvin: not a keyword of this model"):
        engine.open(keywords=["marvin"])


def test_slots_are_reused_and_start_from_zero_state():
    audio = load_audio(EXAMPLE, 16000)[: 16000 * 4]
    engine = MultiStreamEngine()
    first = [engine.open() for _ in range(5)]
    for stream in first:
        stream.feed(audio)
    engine.drain()
    engine.close(first[2])
    late = engine.open()  # takes slot 2, which held a stream's state
    assert late.slot == 2
    late.feed(audio)
    late.finish()
    again = [r.posteriors for r in engine.drain() if r.stream is late]
    fresh, _ = _reference([audio], 16000)
    np.testing.assert_allclose(np.array(again), fresh, atol=1e-5)


def test_a_graph_with_a_fixed_batch_runs_in_groups(random_kws_model):
    audio = load_audio(EXAMPLE, 16000)[: 16000 * 5]
    engine = MultiStreamEngine(random_kws_model)  # exported for batch 1
    streams = [engine.open() for _ in range(3)]
    for k, stream in enumerate(streams):
        stream.feed(audio * (k + 1) / 3)
    results = engine.drain()
    for k, stream in enumerate(streams):
        spotter = KeywordSpotter(random_kws_model)
        want = spotter.posteriors(audio * (k + 1) / 3)
        np.testing.assert_allclose(
            np.array([r.posteriors for r in results if r.stream is stream]), want, atol=1e-5
        )
