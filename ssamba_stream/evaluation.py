"""Continuous-stream evaluation of a keyword spotter: false rejects at a false-accept rate per hour.

Users of wake-word systems judge them by two numbers on long, real audio: the share of spoken
keywords that never fired (false-reject rate, FRR) and how often it fires on nothing (false
accepts per hour, FA/h). Both depend on the threshold, so the model runs once over the stream
and the detector is replayed on its posteriors for a sweep of thresholds; the DET curve (FRR
against FA/h) shows the trade-off, and "FRR at <= 1 FA/h" condenses it into one number.

Ground truth is a CSV with header ``start,end,label`` (seconds; ``training/stream_builder.py``
writes one), optionally with a fourth column ``word``: what was said (``town`` for an
``_unknown_``), so that false accepts can be traced to the words that set them off. An event matches a keyword occurrence of its own label when its time lies in
``[start, end + tolerance]`` (events fire after the word, at the end of their block); each
occurrence matches at most once. Every other event is a false accept. Labels the detector
ignores (``_unknown_``, ``_silence_``) are words to stay silent on, not keywords.

Torch-free; matplotlib is needed only for the DET plot.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import iter_audio_blocks
from .errors import UserError, absence
from .kws import Detector, DetectorConfig, Event, smooth
from .spotter import KeywordSpotter

if TYPE_CHECKING:  # matplotlib is optional: imported only where a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_TOLERANCE = 1.0  # seconds after a word's end in which its event still counts
# 0.05 .. 0.99 by 0.01, then 0.991 .. 0.999: a confident softmax model's DET curve bends up there.
DEFAULT_THRESHOLDS = tuple(round(0.05 + 0.01 * i, 2) for i in range(95)) + tuple(
    round(0.99 + 0.001 * i, 3) for i in range(1, 10)
)
TARGET_FRR = 0.05  # the goal the DET plot marks: 5% FRR at 1 FA/h
TARGET_FA_PER_HOUR = 1.0
HEADER = ["start", "end", "label"]
WORD_COLUMN = "word"  # optional fourth column: the word spoken
NOTHING_SAID = "(no word)"  # what a false accept in silence or noise was said on
MATPLOTLIB_MISSING = "install matplotlib: pip install 'ssamba-stream[eval]'"
TARGET_COLOUR = "black"  # not one of the colours the curves cycle through
END_SLACK_SECONDS = 0.05  # labels may end this far past the audio (rounding in the CSV)


@dataclass(frozen=True)
class Occurrence:
    """One labelled word in the stream: its audible span in seconds."""

    start: float
    end: float
    label: str
    word: str = ""  # the word spoken, when the labels file says

    @property
    def said(self) -> str:
        return self.word or self.label


def read_ground_truth(path: str | os.PathLike) -> list[Occurrence]:
    """The occurrences of a ``start,end,label[,word]`` CSV; a malformed file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"labels file {path} {absence(path)}: pass --labels S.csv (written by training/stream_builder.py)"
        )
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header not in (HEADER, [*HEADER, WORD_COLUMN]):
        raise UserError(f"labels file {path} must start with the header row start,end,label[,word]")
    return [_occurrence(path, number, row, header) for number, row in enumerate(rows[1:], start=2) if row]


def _occurrence(path: Path, line: int, row: list[str], header: list[str]) -> Occurrence:
    where = f"labels file {path} line {line}"
    if len(row) != len(header) or not row[2].strip():
        raise UserError(f"{where}: expected {','.join(header)}, got {','.join(row)!r}")
    try:
        start, end = float(row[0]), float(row[1])
    except ValueError:
        raise UserError(
            f"{where}: start and end must be numbers of seconds, got {row[0]!r}, {row[1]!r}"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
        raise UserError(f"{where}: need 0 <= start <= end, got start {start}, end {end}")
    return Occurrence(start, end, row[2].strip(), row[3].strip() if len(row) > 3 else "")


class _Windows:
    """Occurrences sorted by start, to find those whose window [start, end + tolerance] holds a time."""

    def __init__(self, occurrences: Sequence[Occurrence], tolerance: float) -> None:
        self.items = sorted(occurrences, key=lambda o: (o.start, o.end))
        self.starts = [o.start for o in self.items]
        self.tolerance = tolerance
        self.longest = max((o.end - o.start for o in self.items), default=0.0) + tolerance

    def containing(self, time: float) -> list[int]:
        found = []
        index = bisect.bisect_right(self.starts, time) - 1
        while index >= 0 and self.starts[index] >= time - self.longest:
            if self.items[index].end + self.tolerance >= time:
                found.append(index)
            index -= 1
        return found

    def end(self, index: int) -> float:
        return self.items[index].end

    def latest(self, time: float) -> Occurrence | None:
        """The occurrence that began last among those whose window holds ``time``."""
        found = self.containing(time)
        return self.items[max(found)] if found else None


@dataclass(frozen=True)
class Matching:
    """Events against keyword occurrences: ``wrong_label`` counts the false accepts that fired
    inside the window of a keyword of another label."""

    hits: int
    wrong_label: int
    unmatched: tuple[Event, ...]  # the false accepts
    missed: tuple[Occurrence, ...] = ()  # keyword occurrences no event matched

    @property
    def false_accepts(self) -> int:
        return len(self.unmatched)


def match_events(events: Sequence[Event], keywords: Sequence[Occurrence], tolerance: float) -> Matching:
    """Match events in time order, each to the free same-label occurrence whose window holds it and
    that ends first (optimal for points against intervals); unmatched events are false accepts."""
    windows = {
        label: _Windows([o for o in keywords if o.label == label], tolerance)
        for label in {o.label for o in keywords}
    }
    every = _Windows(keywords, tolerance)
    used: set[tuple[str, int]] = set()
    hits = wrong_label = 0
    unmatched = []
    for event in sorted(events, key=lambda e: e.time):
        own = windows.get(event.label)
        free = [i for i in own.containing(event.time) if (event.label, i) not in used] if own else []
        if free:
            used.add((event.label, min(free, key=own.end)))
            hits += 1
            continue
        unmatched.append(event)
        wrong_label += any(every.items[i].label != event.label for i in every.containing(event.time))
    missed = [o for label, own in windows.items() for i, o in enumerate(own.items) if (label, i) not in used]
    return Matching(hits, wrong_label, tuple(unmatched), tuple(sorted(missed, key=lambda o: o.start)))


@dataclass(frozen=True)
class FalseAccept:
    """A false accept and the word it fired on (the latest one whose window holds it)."""

    time: float
    label: str
    score: float
    said: str

    def to_json(self) -> dict[str, object]:
        return {
            "time": round(self.time, 3),
            "label": self.label,
            "score": round(self.score, 4),
            "said": self.said,
        }


def false_accepts(
    events: Sequence[Event],
    occurrences: Sequence[Occurrence],
    keywords: Sequence[Occurrence],
    tolerance: float,
) -> list[FalseAccept]:
    """The false accepts among ``events``, each with the word of ``occurrences`` (keywords and others)
    it fired on, or ``NOTHING_SAID``: which words a model confuses with its keywords."""
    spoken = _Windows(occurrences, tolerance)
    result = []
    for event in match_events(events, keywords, tolerance).unmatched:
        word = spoken.latest(event.time)
        result.append(
            FalseAccept(event.time, event.label, event.score, NOTHING_SAID if word is None else word.said)
        )
    return result


@dataclass(frozen=True)
class OperatingPoint:
    """The detector's errors at one threshold over a stream of ``hours``."""

    threshold: float
    keywords: int
    hits: int
    false_accepts: int
    wrong_label: int
    hours: float

    @property
    def misses(self) -> int:
        return self.keywords - self.hits

    @property
    def frr(self) -> float:
        return self.misses / self.keywords

    @property
    def fa_per_hour(self) -> float:
        return self.false_accepts / self.hours

    def to_json(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "keywords": self.keywords,
            "hits": self.hits,
            "misses": self.misses,
            "frr": round(self.frr, 6),
            "false_accepts": self.false_accepts,
            "wrong_label": self.wrong_label,
            "fa_per_hour": round(self.fa_per_hour, 4),
        }


def operating_point(
    threshold: float, events: Sequence[Event], keywords: Sequence[Occurrence], hours: float, tolerance: float
) -> OperatingPoint:
    """Score one threshold's events against the keyword occurrences."""
    return _scored(threshold, match_events(events, keywords, tolerance), len(keywords), hours)


def _scored(threshold: float, matching: Matching, keywords: int, hours: float) -> OperatingPoint:
    return OperatingPoint(
        threshold, keywords, matching.hits, matching.false_accepts, matching.wrong_label, hours
    )


@dataclass(frozen=True)
class StreamPosteriors:
    """The model's posteriors over a whole stream, to replay the detector on at any threshold."""

    values: np.ndarray  # (blocks, classes)
    labels: tuple[str, ...]
    block_seconds: float
    seconds: float  # audio length of the stream
    _smoothed: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def events(self, config: DetectorConfig) -> list[Event]:
        """The detector's events over the whole stream; smoothing is computed once per window length."""
        window = config.smoothing_blocks
        if window not in self._smoothed:
            self._smoothed[window] = smooth(self.values, window)
        return Detector(self.labels, self.block_seconds, config).update_smoothed(self._smoothed[window])


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
    return StreamPosteriors(np.concatenate(parts), spotter.labels, spotter.block_seconds, spotter.seconds)


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

    @property
    def setting(self) -> str:
        return "given setting" if self.given else "defaults"

    @property
    def keywords(self) -> int:
        return self.default.keywords

    @property
    def best_at_target(self) -> OperatingPoint | None:
        """The lowest-FRR sweep point with at most 1 FA/h (ties: fewer false accepts), or None."""
        allowed = [p for p in self.sweep if p.fa_per_hour <= TARGET_FA_PER_HOUR]
        return min(allowed, key=lambda p: (p.frr, p.fa_per_hour, p.threshold), default=None)

    def summary(self) -> str:
        d, best = self.default, self.best_at_target
        lines = [
            f"stream {Path(self.stream).name}: {self.seconds / 60:.1f} min, {self.keywords} keywords, "
            f"{self.other_words} other words; model {Path(self.model).name}",
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
               progress: Callable[[float], None] | None = None) -> StreamRun:  # fmt: skip
    """One model pass over a labelled stream, its labels checked against the model and the audio."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise UserError(f"tolerance must be >= 0 seconds, got {tolerance}")
    occurrences = read_ground_truth(labels)
    spotter = KeywordSpotter(model, backend=backend)
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
) -> StreamEvaluation:
    """Evaluate ``model`` (default: the bundled one) on a labelled stream: one model pass, then the
    sweep; ``detector`` (default: the model's sidecar) sets the scored point and the sweep's smoothing."""
    run = run_stream(stream, labels, model, backend, tolerance, progress)
    config, posteriors = detector or run.spotter.detector.config, run.posteriors
    hours = posteriors.seconds / 3600
    events = posteriors.events(config)
    matching = match_events(events, run.keywords, tolerance)
    default = _scored(config.threshold, matching, len(run.keywords), hours)
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
    )


SMOOTHING_CHOICES = (1, 2, 3, 4, 6, 8)  # blocks; longer windows trade latency for fewer false accepts


@dataclass(frozen=True)
class _Option:
    """One threshold of one keyword, scored with only that keyword able to fire."""

    threshold: float
    misses: int
    false_accepts: int


def _keyword_options(
    posteriors: StreamPosteriors, config: DetectorConfig, keywords: Sequence[Occurrence], tolerance: float,
    budget: int,
) -> dict[str, list[_Option]]:  # fmt: skip
    """Per keyword label, the sweep's thresholds scored alone: its misses and its false accepts.

    Scanned from the highest threshold down, stopping at the first that alone spends more than
    ``budget`` false accepts: lower ones fire more and could not be chosen (and there the replay,
    which walks every event, is slowest)."""
    options: dict[str, list[_Option]] = {}
    for label in (name for name in posteriors.labels if name not in config.ignore):
        alone = dataclasses.replace(
            config, thresholds={}, ignore=tuple(n for n in posteriors.labels if n != label)
        )
        count = sum(o.label == label for o in keywords)
        options[label] = []
        for threshold in reversed(DEFAULT_THRESHOLDS):
            events = posteriors.events(dataclasses.replace(alone, threshold=threshold))
            matching = match_events(events, keywords, tolerance)
            if matching.false_accepts > budget:
                break
            options[label].append(_Option(threshold, count - matching.hits, matching.false_accepts))
    return options


def _spend_false_accepts(options: dict[str, list[_Option]], budget: int) -> dict[str, float] | None:
    """Per-keyword thresholds with the fewest misses in all, their false accepts summed within ``budget``.

    An exact knapsack over the integer false-accept count (the budget is a few per hour); ties go to
    fewer false accepts, then to higher thresholds (more margin on unseen audio). None when some
    keyword fires more than ``budget`` times at every threshold.
    """
    Plan = tuple[int, int, float, dict[str, float]]  # misses, false accepts, -sum of thresholds, choice
    plans: list[Plan | None] = [(0, 0, 0.0, {})] + [None] * budget  # index: false accepts allowed so far
    for label, choices in options.items():
        grown: list[Plan | None] = [None] * (budget + 1)
        for spent, plan in enumerate(plans):
            if plan is None:
                continue
            for option in choices:
                total = spent + option.false_accepts
                if total > budget:
                    continue
                candidate = (plan[0] + option.misses, total, plan[2] - option.threshold,
                             {**plan[3], label: option.threshold})  # fmt: skip
                if grown[total] is None or candidate[:3] < grown[total][:3]:
                    grown[total] = candidate
        plans = grown
    feasible = [plan for plan in plans if plan is not None]
    return min(feasible, key=lambda plan: plan[:3])[3] if feasible else None


def _per_keyword_config(
    posteriors: StreamPosteriors, config: DetectorConfig, keywords: Sequence[Occurrence], tolerance: float,
    max_fa_per_hour: float,
) -> tuple[DetectorConfig, OperatingPoint] | None:  # fmt: skip
    """``config`` with per-keyword thresholds from ``_spend_false_accepts``, scored with all keywords
    live (one keyword's refractory period can mask another's event); None when it misses the budget."""
    hours = posteriors.seconds / 3600
    budget = math.floor(max_fa_per_hour * hours + 1e-9)
    options = _keyword_options(posteriors, config, keywords, tolerance, budget)
    most = sum(max((o.false_accepts for o in choices), default=0) for choices in options.values())
    chosen = _spend_false_accepts(options, min(budget, most))  # a budget no choice can spend is no use
    if chosen is None:
        return None
    tuned = dataclasses.replace(config, threshold=max(chosen.values()), thresholds=chosen).checked()
    point = operating_point(tuned.threshold, posteriors.events(tuned), keywords, hours, tolerance)
    return (tuned, point) if point.fa_per_hour <= max_fa_per_hour else None


def tune_detector(
    stream: str | os.PathLike,
    labels: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    max_fa_per_hour: float = TARGET_FA_PER_HOUR,
    smoothing: Sequence[int] = SMOOTHING_CHOICES,
    per_keyword: bool = False,
    backend: str = "onnxruntime",
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[DetectorConfig, OperatingPoint]:
    """The detector defaults with the lowest FRR at <= ``max_fa_per_hour`` on a held-out labelled
    stream (``tune_posteriors`` after one model pass). Tune on validation voices and report on test
    voices, so that the reported figure is not tuned on."""
    run = run_stream(stream, labels, model, backend, tolerance)
    return tune_posteriors(run.posteriors, run.spotter.detector.config, run.keywords,
                           max_fa_per_hour=max_fa_per_hour, smoothing=smoothing, per_keyword=per_keyword,
                           tolerance=tolerance, stream=str(stream))  # fmt: skip


def tune_posteriors(
    posteriors: StreamPosteriors,
    base: DetectorConfig,
    keywords: Sequence[Occurrence],
    *,
    max_fa_per_hour: float = TARGET_FA_PER_HOUR,
    smoothing: Sequence[int] = SMOOTHING_CHOICES,
    per_keyword: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    stream: str = "the stream",
) -> tuple[DetectorConfig, OperatingPoint]:
    """Smoothing and threshold with the lowest FRR at <= ``max_fa_per_hour`` (ties: fewer false
    accepts, then the higher threshold, for margin, then less smoothing).

    ``per_keyword``: also try one threshold per keyword, the stream's false-accept budget spent
    where it buys the most hits (keywords differ: some have a near-homophone among the other
    words, some do not); chosen only when it beats the best single threshold. Ten thresholds fit a
    stream more closely than one: tune them on a long stream (hours)."""
    candidates = []
    for blocks in smoothing:
        config = dataclasses.replace(base, smoothing_blocks=blocks).checked()
        for point in sweep(posteriors, config, keywords, tolerance):
            if point.fa_per_hour <= max_fa_per_hour:
                tuned = dataclasses.replace(config, threshold=point.threshold, thresholds={})
                candidates.append((point.frr, point.false_accepts, -point.threshold, blocks, 0, tuned, point))
        if per_keyword:
            found = _per_keyword_config(posteriors, config, keywords, tolerance, max_fa_per_hour)
            if found is not None:
                candidates.append(
                    (found[1].frr, found[1].false_accepts, -found[1].threshold, blocks, 1, *found)
                )
    if not candidates:
        raise UserError(
            f"no setting reaches {max_fa_per_hour:g} FA/h on {stream}: allow more (--max-fa-per-hour) or "
            "improve the model"
        )
    best = min(candidates, key=lambda c: c[:5])
    return best[5], best[6]


def write_sweep_csv(result: StreamEvaluation, path: str | os.PathLike) -> None:
    """The sweep, one row per threshold, for spreadsheets and RESULTS.md tables."""
    rows = [p.to_json() for p in result.sweep]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def require_matplotlib() -> None:
    """Fail early, before an hour of audio is processed, when the DET plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(MATPLOTLIB_MISSING) from None


def det_axes(title: str, most_fa_per_hour: float) -> tuple[Figure, Axes]:
    """An empty DET plot (FRR % against FA/h, the target marked) for one or more curves."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    axes.plot(TARGET_FA_PER_HOUR, 100 * TARGET_FRR, "*", ms=14, color=TARGET_COLOUR, label="target")
    axes.axvline(TARGET_FA_PER_HOUR, color=TARGET_COLOUR, ls=":", lw=1)
    axes.axhline(100 * TARGET_FRR, color=TARGET_COLOUR, ls=":", lw=1)
    axes.set_xscale("symlog", linthresh=1.0)  # linear up to 1 FA/h (0 included), logarithmic above
    axes.set_xlim(0, 2 * max(10.0, most_fa_per_hour))
    axes.set_ylim(0, 100)
    axes.set_xlabel("false accepts per hour")
    axes.set_ylabel("false-reject rate (%)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    return figure, axes


def plot_det(result: StreamEvaluation, path: str | os.PathLike) -> None:
    """DET curve: FRR % against FA/h, one point per threshold, with the target and the default marked."""
    fa, frr = [p.fa_per_hour for p in result.sweep], [100 * p.frr for p in result.sweep]
    title = f"{Path(result.stream).name}: {result.seconds / 60:.0f} min, {result.keywords} keywords"
    figure, axes = det_axes(title, max(fa))
    axes.plot(fa, frr, "o-", ms=3, label="thresholds")
    d = result.default
    axes.plot(
        d.fa_per_hour,
        100 * d.frr,
        "s",
        color="tab:orange",
        label=f"default ({describe_thresholds(result.detector)})",
    )
    axes.legend(loc="best")
    figure.savefig(path, dpi=120)
