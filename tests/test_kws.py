"""The keyword detector: smoothing, per-label thresholds, refractory period, streaming == offline."""

import numpy as np
import pytest

from ssamba_stream.errors import UserError
from ssamba_stream.kws import Detector, DetectorConfig, detect, parse_thresholds

LABELS = ("yes", "no", "_silence_", "_unknown_")
BLOCK = 0.16


def posteriors(rows: list[dict[str, float]]) -> np.ndarray:
    """One row per block; unnamed mass goes to _silence_."""
    out = np.zeros((len(rows), len(LABELS)))
    for i, row in enumerate(rows):
        for label, value in row.items():
            out[i, LABELS.index(label)] = value
        out[i, LABELS.index("_silence_")] += 1.0 - out[i].sum()
    return out


def test_fires_once_per_word_at_the_block_end_time():
    config = DetectorConfig(threshold=0.5, smoothing_blocks=1, refractory_seconds=1.0)
    rows = [{}] * 3 + [{"yes": 0.9}] * 4 + [{}] * 10 + [{"no": 0.8}] * 2
    events = detect(posteriors(rows), LABELS, BLOCK, config)
    assert [e.label for e in events] == ["yes", "no"]
    assert events[0].time == pytest.approx(4 * BLOCK)  # block 3 ends at 0.64 s
    assert events[1].time == pytest.approx(18 * BLOCK)
    assert events[0].score == pytest.approx(0.9)


def test_refractory_period_suppresses_a_repeat_and_then_allows_it():
    config = DetectorConfig(threshold=0.5, smoothing_blocks=1, refractory_seconds=0.5)
    rows = [{"yes": 0.9}] * 8  # 8 blocks = 1.28 s of continuous "yes"
    events = detect(posteriors(rows), LABELS, BLOCK, config)
    times = [round(e.time, 2) for e in events]
    assert times == [0.16, 0.80]  # the next block at least 0.5 s after the first


def test_smoothing_ignores_a_one_block_spike():
    rows = [{}, {"yes": 0.9}, {}, {}]
    spiky = posteriors(rows)
    assert detect(spiky, LABELS, BLOCK, DetectorConfig(smoothing_blocks=1))
    assert not detect(spiky, LABELS, BLOCK, DetectorConfig(smoothing_blocks=3))
    steady = posteriors([{}, {"yes": 0.9}, {"yes": 0.9}, {"yes": 0.9}])
    events = detect(steady, LABELS, BLOCK, DetectorConfig(smoothing_blocks=3))
    assert [(e.label, round(e.time, 2)) for e in events] == [
        ("yes", 0.48)
    ]  # mean over blocks 0-2 reaches 0.6


def test_ignored_labels_never_fire_and_per_label_thresholds_apply():
    rows = [{"_unknown_": 0.95}] * 3 + [{}] * 10 + [{"no": 0.6}] * 3
    default = detect(posteriors(rows), LABELS, BLOCK, DetectorConfig(threshold=0.5, smoothing_blocks=1))
    assert [e.label for e in default] == ["no"]
    strict = DetectorConfig(threshold=0.5, smoothing_blocks=1).with_overrides(thresholds={"no": 0.7})
    assert detect(posteriors(rows), LABELS, BLOCK, strict) == []


def test_streaming_in_pieces_equals_offline():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, len(LABELS))) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    config = DetectorConfig(threshold=0.6, smoothing_blocks=3, refractory_seconds=0.4)
    offline = detect(probs, LABELS, BLOCK, config)
    assert len(offline) > 5
    detector = Detector(LABELS, BLOCK, config)
    pieces, start = [], 0
    while start < len(probs):
        size = int(rng.integers(0, 7))
        pieces += detector.update(probs[start : start + size])
        start += size
    assert pieces == offline
    detector.reset()
    assert detector.update(probs) == offline


def reference_events(probs, config):
    """The detector's definition, block by block: mean of the last w blocks, refractory, best keyword."""
    keyword = np.array([label not in config.ignore for label in LABELS])
    events, last = [], -np.inf
    for row in range(len(probs)):
        smoothed = probs[max(0, row + 1 - config.smoothing_blocks) : row + 1].mean(axis=0)
        time = (row + 1) * BLOCK
        passing = keyword & (smoothed >= config.threshold)
        if passing.any() and time - last >= config.refractory_seconds - 1e-9:
            best = int(np.argmax(np.where(passing, smoothed, -np.inf)))
            events.append((round(time, 6), LABELS[best], smoothed[best]))
            last = time
    return events


@pytest.mark.parametrize("window", [1, 2, 8])
def test_vectorised_detector_follows_its_definition(window):
    rng = np.random.default_rng(window)
    logits = rng.normal(size=(400, len(LABELS))) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    config = DetectorConfig(threshold=0.55, smoothing_blocks=window, refractory_seconds=0.3)
    want = reference_events(probs, config)
    assert len(want) > 5
    detector, got, start = Detector(LABELS, BLOCK, config), [], 0
    while start < len(probs):
        size = int(rng.integers(0, 11))
        got += detector.update(probs[start : start + size])
        start += size
    assert [(round(e.time, 6), e.label) for e in got] == [(t, label) for t, label, _ in want]
    assert np.allclose([e.score for e in got], [score for *_, score in want], rtol=1e-12)


def test_sidecar_defaults_and_overrides():
    config = DetectorConfig.from_sidecar(
        {
            "threshold": 0.7,
            "smoothing_blocks": 4,
            "refractory_seconds": 2.0,
            "ignore": ["_silence_"],
            "extra": 1,
        }
    )
    assert (config.threshold, config.smoothing_blocks, config.ignore) == (0.7, 4, ("_silence_",))
    changed = config.with_overrides(threshold=0.3, refractory_seconds=0.0)
    assert (changed.threshold, changed.refractory_seconds, changed.smoothing_blocks) == (0.3, 0.0, 4)


def test_one_threshold_replaces_tuned_per_keyword_thresholds():
    tuned = DetectorConfig(threshold=0.9, thresholds={"yes": 0.8, "no": 0.95})
    assert tuned.with_overrides(threshold=0.3).thresholds == {}
    assert tuned.with_overrides(threshold=0.3, thresholds={"no": 0.6}).thresholds == {"no": 0.6}
    assert tuned.with_overrides(thresholds={"no": 0.6}).thresholds == {"yes": 0.8, "no": 0.6}
    assert tuned.with_overrides(smoothing_blocks=3).thresholds == {"yes": 0.8, "no": 0.95}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": 1.5}, "between 0 and 1"),
        ({"smoothing_blocks": 0}, "smoothing"),
        ({"refractory_seconds": -1.0}, "refractory"),
    ],
)
def test_bad_detector_options_name_the_problem(kwargs, message):
    with pytest.raises(UserError, match=message):
        DetectorConfig().with_overrides(**kwargs)


def test_thresholds_for_unknown_labels_are_refused():
    with pytest.raises(UserError, match="not a label of this model"):
        Detector(LABELS, BLOCK, DetectorConfig(thresholds={"marvin": 0.5}))


def test_parse_thresholds():
    assert parse_thresholds("yes=0.7, stop=0.6") == {"yes": 0.7, "stop": 0.6}
    assert parse_thresholds("") == {}
    for bad in ("yes", "yes=high", "=0.5"):
        with pytest.raises(UserError, match="LABEL=VALUE"):
            parse_thresholds(bad)
