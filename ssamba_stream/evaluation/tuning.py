"""Detector settings chosen on a validation stream: one threshold and smoothing, or per keyword."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UserError
from ..kws import DetectorConfig
from .labels import Occurrence
from .matching import (
    DEFAULT_TOLERANCE,
    TARGET_FA_PER_HOUR,
    OperatingPoint,
    match_events,
    operating_point,
)
from .stream import (
    DEFAULT_THRESHOLDS,
    StreamPosteriors,
    run_stream,
    sweep,
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
