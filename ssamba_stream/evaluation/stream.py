"""One model pass over a labelled stream, the detector replayed over a threshold sweep."""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import iter_audio_blocks
from ..errors import UserError
from ..kws import Detector, DetectorConfig, Event, smooth
from ..spotter import KeywordSpotter
from ..vad import SpeechGate
from .labels import END_SLACK_SECONDS, Occurrence, read_ground_truth
from .matching import (
    DEFAULT_TOLERANCE,
    TARGET_FA_PER_HOUR,
    TARGET_FRR,
    FalseAccept,
    OperatingPoint,
    false_accepts,
    match_events,
    operating_point,
    scored_point,
)

DEFAULT_THRESHOLDS = tuple(round(0.05 + 0.01 * i, 2) for i in range(95)) + tuple(
    round(0.99 + 0.001 * i, 3) for i in range(1, 10)
)


@dataclass(frozen=True)
class StreamPosteriors:
    """The model's posteriors over a whole stream, to replay the detector on at any threshold."""

    values: np.ndarray  # (blocks, classes)
    labels: tuple[str, ...]
    block_seconds: float
    seconds: float  # audio length of the stream
    gate: SpeechGate | None = field(default=None, repr=False, compare=False)  # heard the whole stream
    _smoothed: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def events(self, config: DetectorConfig) -> list[Event]:
        """The detector's events over the whole stream, less those the VAD gate (if any) drops;
        smoothing is computed once per window length."""
        window = config.smoothing_blocks
        if window not in self._smoothed:
            self._smoothed[window] = smooth(self.values, window)
        events = Detector(self.labels, self.block_seconds, config).update_smoothed(self._smoothed[window])
        return events if self.gate is None else self.gate.keep(events)


def stream_posteriors(spotter: KeywordSpotter, path: str | os.PathLike,
                      progress: Callable[[float], None] | None = None) -> StreamPosteriors:  # fmt: skip
    """Run the model once over a recording, streamed from the file in blocks (constant memory);
    ``progress`` is told the audio seconds done after each block."""
    spotter.reset()
    parts, rate = [], None
    for block, rate in iter_audio_blocks(path, seconds=10.0):  # never empty: it rejects sample-less files
        parts.append(spotter.posteriors(block, rate))
        if progress is not None:
            progress(spotter.seconds)
    parts.append(spotter.posteriors(np.zeros(0, np.float32), rate, last=True))
    values = np.concatenate(parts)
    return StreamPosteriors(values, spotter.labels, spotter.block_seconds, spotter.seconds, spotter.gate)


def sweep(
    posteriors: StreamPosteriors,
    config: DetectorConfig,
    keywords: Sequence[Occurrence],
    tolerance: float = DEFAULT_TOLERANCE,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> list[OperatingPoint]:
    """One operating point per global threshold (per-label thresholds dropped), other settings kept."""
    hours = posteriors.seconds / 3600
    points = []
    for threshold in thresholds:
        events = posteriors.events(dataclasses.replace(config, threshold=threshold, thresholds={}).checked())
        points.append(operating_point(threshold, events, keywords, hours, tolerance))
    return points


def best_within(points: Sequence[OperatingPoint], max_fa_per_hour: float) -> OperatingPoint | None:
    """The lowest-FRR point with at most ``max_fa_per_hour`` (ties: fewer false accepts, then the
    lower threshold), or None when every point fires more often."""
    allowed = [p for p in points if p.fa_per_hour <= max_fa_per_hour]
    return min(allowed, key=lambda p: (p.frr, p.fa_per_hour, p.threshold), default=None)


def describe_thresholds(config: DetectorConfig) -> str:
    """``threshold 0.96`` or ``per-keyword thresholds 0.81-0.99``, for one-line reports."""
    if not config.thresholds:
        return f"threshold {config.threshold:.2f}"
    values = list(config.thresholds.values())
    return f"per-keyword thresholds {min(values):.2f}-{max(values):.2f}"


@dataclass(frozen=True)
class StreamEvaluation:
    """FRR and FA/h of a model on one labelled stream: at one detector setting (the model's defaults
    unless ``given``) and per threshold."""

    stream: str
    model: str
    seconds: float
    other_words: int  # occurrences of ignored labels (unknown words): chances to fire falsely
    tolerance: float
    default: OperatingPoint
    sweep: tuple[OperatingPoint, ...]
    default_false_accepts: tuple[FalseAccept, ...]  # at the default settings, with the words they fired on
    detector: DetectorConfig  # the setting the ``default`` point was scored at
    misses_by_keyword: tuple[tuple[str, int, int], ...]  # at that setting: (label, missed, occurrences)
    given: bool = False  # the setting was given by the caller rather than read from the model's sidecar
    vad_hold: float | None = None  # the VAD gate's look back in seconds; None: no gate

    @property
    def setting(self) -> str:
        return "given setting" if self.given else "defaults"

    @property
    def keywords(self) -> int:
        return self.default.keywords

    @property
    def best_at_target(self) -> OperatingPoint | None:
        """The lowest-FRR sweep point with at most 1 FA/h (ties: fewer false accepts), or None."""
        return best_within(self.sweep, TARGET_FA_PER_HOUR)

    def summary(self) -> str:
        d, best = self.default, self.best_at_target
        lines = [
            f"stream {Path(self.stream).name}: {self.seconds / 60:.1f} min, {self.keywords} keywords, "
            f"{self.other_words} other words; model {Path(self.model).name}"
            + ("" if self.vad_hold is None else f"; VAD gate, hold {self.vad_hold:g} s"),
            f"{self.setting} ({describe_thresholds(self.detector)}, smoothing {self.detector.smoothing_blocks}): "
            f"FRR {d.frr:.1%} ({d.misses} of {d.keywords} missed), "
            f"{d.fa_per_hour:.2f} FA/h ({d.false_accepts} false accepts, {d.wrong_label} of them wrong keywords)",
            f"missed at the {self.setting}, by keyword: "
            + ", ".join(f"{label} {missed}/{total}" for label, missed, total in self.misses_by_keyword),
        ]
        if best is None:
            lines.append(
                f"FRR at <= 1 FA/h: not reached (the fewest is {min(p.fa_per_hour for p in self.sweep):.2f} FA/h)"
            )
        else:
            lines.append(
                f"FRR at <= 1 FA/h: {best.frr:.1%} (threshold {best.threshold:.2f}, {best.fa_per_hour:.2f} FA/h)"
            )
        if self.default_false_accepts:
            lines.append(
                f"false accepts at the {self.setting}, by what was said: {self.false_accept_sources()}"
            )
        met = best is not None and best.frr <= TARGET_FRR
        lines.append(
            f"target FRR <= {TARGET_FRR:.0%} at <= {TARGET_FA_PER_HOUR:g} FA/h: {'met' if met else 'not met'}"
        )
        return "\n".join(lines)

    def false_accept_sources(self, most: int = 10) -> str:
        """``'down' on town x2, ...``: the commonest (keyword, word said) pairs among the default's false accepts."""
        counts = Counter((fa.label, fa.said) for fa in self.default_false_accepts)
        pairs = [f"'{label}' on {said} x{n}" for (label, said), n in counts.most_common(most)]
        rest = len(counts) - len(pairs)
        return ", ".join(pairs) + (f" and {rest} more" if rest > 0 else "")

    def to_json(self) -> dict[str, object]:
        best = self.best_at_target
        return {
            "stream": self.stream,
            "model": self.model,
            "minutes": round(self.seconds / 60, 3),
            "keywords": self.keywords,
            "other_words": self.other_words,
            "tolerance_seconds": self.tolerance,
            "default": self.default.to_json(),
            "detector": self.detector.to_sidecar(),
            "detector_given": self.given,
            "vad_hold_seconds": self.vad_hold,
            "misses_by_keyword": {
                label: {"missed": missed, "occurrences": total}
                for label, missed, total in self.misses_by_keyword
            },  # fmt: skip
            "default_false_accepts": [fa.to_json() for fa in self.default_false_accepts],
            "frr_at_1_fa_per_hour": None if best is None else best.to_json(),
            "sweep": [p.to_json() for p in self.sweep],
        }


def _keywords(
    occurrences: Sequence[Occurrence], labels: Sequence[str], config: DetectorConfig
) -> list[Occurrence]:
    """The occurrences the model should fire on; a label the model does not know is an error."""
    unknown = sorted({o.label for o in occurrences} - set(labels) - set(config.ignore))
    if unknown:
        raise UserError(
            f"the labels file names {', '.join(unknown)}, not labels of this model ({', '.join(labels)}): "
            "evaluate with the model the stream was built for"
        )
    keywords = [o for o in occurrences if o.label not in config.ignore]
    if not keywords:
        raise UserError("the labels file lists no keyword occurrences: FRR needs at least one")
    return keywords


@dataclass(frozen=True)
class StreamRun:
    """One model pass over a labelled stream: what every evaluation and tuning starts from."""

    spotter: KeywordSpotter
    occurrences: list[Occurrence]
    keywords: list[Occurrence]
    posteriors: StreamPosteriors


def run_stream(stream: str | os.PathLike, labels: str | os.PathLike, model: str | os.PathLike | None,
               backend: str = "onnxruntime", tolerance: float = DEFAULT_TOLERANCE,
               progress: Callable[[float], None] | None = None,
               vad: SpeechGate | None = None) -> StreamRun:  # fmt: skip
    """One model pass over a labelled stream, its labels checked against the model and the audio;
    ``vad`` (keeping every window: ``memory_seconds=None``) gates the events replayed on it."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise UserError(f"tolerance must be >= 0 seconds, got {tolerance}")
    occurrences = read_ground_truth(labels)
    spotter = KeywordSpotter(model, backend=backend, vad=vad)
    keywords = _keywords(occurrences, spotter.labels, spotter.detector.config)
    posteriors = stream_posteriors(spotter, stream, progress)
    last_end = max(o.end for o in occurrences)
    if last_end > posteriors.seconds + END_SLACK_SECONDS:
        raise UserError(
            f"the labels go to {last_end:.2f} s but {stream} lasts {posteriors.seconds:.2f} s: "
            "pass the labels CSV written with this stream"
        )
    return StreamRun(spotter, occurrences, keywords, posteriors)


def evaluate_stream(
    stream: str | os.PathLike,
    labels: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    backend: str = "onnxruntime",
    tolerance: float = DEFAULT_TOLERANCE,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    detector: DetectorConfig | None = None,
    progress: Callable[[float], None] | None = None,
    vad: SpeechGate | None = None,
) -> StreamEvaluation:
    """Evaluate ``model`` (default: the bundled one) on a labelled stream: one model pass, then the
    sweep; ``detector`` (default: the model's sidecar) sets the scored point and the sweep's smoothing;
    ``vad`` gates every event (see ``run_stream``)."""
    run = run_stream(stream, labels, model, backend, tolerance, progress, vad)
    config, posteriors = detector or run.spotter.detector.config, run.posteriors
    hours = posteriors.seconds / 3600
    events = posteriors.events(config)
    matching = match_events(events, run.keywords, tolerance)
    default = scored_point(config.threshold, matching, len(run.keywords), hours)
    missed = Counter(o.label for o in matching.missed)
    occurrences = Counter(o.label for o in run.keywords)
    return StreamEvaluation(
        stream=str(stream),
        model=str(run.spotter.model_path),
        seconds=posteriors.seconds,
        other_words=len(run.occurrences) - len(run.keywords),
        tolerance=tolerance,
        default=default,
        sweep=tuple(sweep(posteriors, config, run.keywords, tolerance, thresholds)),
        default_false_accepts=tuple(false_accepts(events, run.occurrences, run.keywords, tolerance)),
        detector=config,
        misses_by_keyword=tuple((label, missed[label], n) for label, n in sorted(occurrences.items())),
        given=detector is not None,
        vad_hold=None if vad is None else vad.hold_seconds,
    )
