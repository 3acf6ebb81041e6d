"""Keyword detector: turns per-block posteriors into keyword events (design §6).

Per block the session gives posteriors over the labels. The detector averages them over the last
``smoothing_blocks`` blocks, fires the best keyword whose smoothed posterior reaches its threshold,
then stays silent for ``refractory_seconds``, so one spoken word gives one event. Labels listed in
``ignore`` (``_silence_``, ``_unknown_``) never fire. Defaults come from the model's JSON sidecar;
callers (the CLI, the evaluation's threshold sweep) override them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class DetectorConfig:
    """When a keyword fires. ``thresholds`` overrides ``threshold`` for single labels."""

    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    smoothing_blocks: int = 2
    refractory_seconds: float = 1.0
    ignore: tuple[str, ...] = ("_silence_", "_unknown_")

    @classmethod
    def from_sidecar(cls, document: Mapping[str, object]) -> DetectorConfig:
        """The ``detector`` section of a model sidecar (unknown keys are ignored, missing ones default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in document.items() if key in names}
        if "ignore" in values:
            values["ignore"] = tuple(values["ignore"])  # type: ignore[arg-type]
        return cls(**values).checked()

    def to_sidecar(self) -> dict[str, object]:
        """The ``detector`` section of a model sidecar (inverse of ``from_sidecar``)."""
        document = dataclasses.asdict(self)
        document["thresholds"], document["ignore"] = dict(self.thresholds), list(self.ignore)
        return document

    def with_overrides(
        self,
        threshold: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        smoothing_blocks: int | None = None,
        refractory_seconds: float | None = None,
    ) -> DetectorConfig:
        """A copy with the given options replaced (None keeps the current value).

        A new ``threshold`` applies to every keyword: it replaces the per-label ones (a tuned
        sidecar has one per keyword, which would otherwise leave it with nothing to act on);
        ``thresholds`` given with it then override single labels again.
        """
        changes: dict[str, object] = {}
        kept = self.thresholds
        if threshold is not None:
            changes["threshold"], changes["thresholds"], kept = threshold, {}, {}
        if thresholds:
            changes["thresholds"] = {**kept, **thresholds}
        if smoothing_blocks is not None:
            changes["smoothing_blocks"] = smoothing_blocks
        if refractory_seconds is not None:
            changes["refractory_seconds"] = refractory_seconds
        return dataclasses.replace(self, **changes).checked()

    def for_labels(self, labels: Sequence[str]) -> DetectorConfig:
        """Self, after a one-line error for a per-label threshold naming no label of the model."""
        unknown = sorted(set(self.thresholds) - set(labels))
        if unknown:
            raise UserError(
                f"threshold given for {', '.join(unknown)}, not a label of this model: use one of {', '.join(labels)}"
            )
        return self

    def checked(self) -> DetectorConfig:
        """Self, after one-line errors for values no detector can use."""
        named = {
            "the threshold": self.threshold,
            **{f"the threshold for {k}": v for k, v in self.thresholds.items()},
        }
        for name, value in named.items():
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise UserError(f"{name} must be a number between 0 and 1, got {value!r}")
        if not (isinstance(self.smoothing_blocks, int) and self.smoothing_blocks >= 1):
            raise UserError(f"smoothing must be a whole number of blocks >= 1, got {self.smoothing_blocks!r}")
        if not (isinstance(self.refractory_seconds, (int, float)) and self.refractory_seconds >= 0):
            raise UserError(f"refractory period must be >= 0 seconds, got {self.refractory_seconds!r}")
        return self


def parse_thresholds(text: str) -> dict[str, float]:
    """``"yes=0.7,stop=0.6"`` -> {"yes": 0.7, "stop": 0.6} (the CLI's --thresholds)."""
    result: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, value = item.partition("=")
        try:
            result[label.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label.strip():
            raise UserError(
                f"bad per-label threshold {item!r}: write LABEL=VALUE pairs, e.g. yes=0.7,stop=0.6"
            )
    return result


@dataclass(frozen=True)
class Event:
    """A detected keyword. ``time`` is the stream time in seconds at which it fired (end of its block)."""

    time: float
    label: str
    score: float

    def to_json(self) -> dict[str, object]:
        return {"time": round(self.time, 3), "label": self.label, "score": round(self.score, 4)}


class Detector:
    """Streaming smoothing + threshold + refractory over posterior blocks of one stream."""

    def __init__(
        self, labels: Sequence[str], block_seconds: float, config: DetectorConfig, time_offset: float = 0.0
    ) -> None:
        config.for_labels(labels)
        self.labels = tuple(labels)
        self.block_seconds = block_seconds
        self.time_offset = time_offset  # audio time of the stream's start relative to block 0's start
        self.config = config
        self.keyword = np.array([label not in config.ignore for label in self.labels])
        if not self.keyword.any():
            raise UserError(
                "every label of this model is ignored by the detector: it cannot fire; check 'ignore'"
            )
        self.thresholds = np.array([config.thresholds.get(label, config.threshold) for label in self.labels])
        self.reset()

    def reset(self) -> None:
        self._recent = np.zeros((0, len(self.labels)))
        self._blocks = 0
        self._last_fire = -math.inf

    def block_end_time(self, block: int) -> float:
        """Stream time at the end of block ``block`` (0-based)."""
        return (block + 1) * self.block_seconds + self.time_offset

    def update(self, posteriors: np.ndarray) -> list[Event]:
        """Feed (blocks, classes) posteriors in stream order; returns the events they trigger."""
        posteriors = np.asarray(posteriors, dtype=np.float64)
        if posteriors.ndim != 2 or posteriors.shape[1] != len(self.labels):
            raise UserError(
                f"expected posteriors of shape (blocks, {len(self.labels)}), got {posteriors.shape}"
            )
        window = self.config.smoothing_blocks
        history = np.concatenate([self._recent, posteriors])
        events = self.update_smoothed(
            _window_means(history, len(self._recent), window)
        )  # a row per new block
        self._recent = history[-(window - 1) :] if window > 1 else history[:0]
        return events

    def update_smoothed(self, smoothed: np.ndarray) -> list[Event]:
        """``update`` for posteriors already smoothed over ``smoothing_blocks`` (the caller keeps the
        history): threshold sweeps smooth a stream once and replay only this part per threshold."""
        passing = self.keyword & (smoothed >= self.thresholds)
        margin = np.where(passing, smoothed, -np.inf)
        events = []
        for row in np.flatnonzero(passing.any(axis=1)):  # few rows pass: only they need the refractory check
            time = self.block_end_time(self._blocks + int(row))
            if time - self._last_fire < self.config.refractory_seconds - 1e-9:
                continue
            best = int(np.argmax(margin[row]))
            events.append(Event(time, self.labels[best], float(smoothed[row, best])))
            self._last_fire = time
        self._blocks += len(smoothed)
        return events


def _window_means(history: np.ndarray, first: int, window: int) -> np.ndarray:
    """Mean of the last ``window`` rows (fewer at the stream's start) ending at each row from ``first`` on.

    Each mean adds its window's rows in order and divides, so it is the same however the stream was
    cut into calls; the full windows are summed a window offset at a time, a few array operations
    whether one block is new (a live stream: 4 us) or hours of them (threshold sweeps).
    """
    rows, classes = history.shape
    full_from = max(first, window - 1)  # rows before this have fewer than ``window`` rows behind them
    partial = [history[: row + 1].mean(axis=0) for row in range(first, min(full_from, rows))]
    parts = [np.array(partial).reshape(-1, classes)]
    if rows > full_from:
        start, count = full_from - window + 1, rows - full_from
        total = history[start : start + count].copy()
        for offset in range(1, window):
            total += history[start + offset : start + offset + count]
        parts.append(total / window)
    return np.concatenate(parts)


def smooth(posteriors: np.ndarray, window: int) -> np.ndarray:
    """The detector's moving average of a whole posterior sequence (blocks, classes), as float64."""
    return _window_means(np.asarray(posteriors, dtype=np.float64), 0, window)


def detect(
    posteriors: np.ndarray,
    labels: Sequence[str],
    block_seconds: float,
    config: DetectorConfig,
    time_offset: float = 0.0,
) -> list[Event]:
    """Events of a whole posterior sequence (blocks, classes): the offline form of ``Detector``."""
    return Detector(labels, block_seconds, config, time_offset).update(posteriors)
