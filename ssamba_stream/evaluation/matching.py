"""Events against ground truth: hits, misses, false accepts and operating points (FRR, FA/h)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from ..kws import Event
from .labels import Occurrence

DEFAULT_TOLERANCE = 1.0  # seconds after a word's end in which its event still counts
NOTHING_SAID = "(no word)"  # what a false accept in silence or noise was said on
TARGET_FRR = 0.05  # the goal: 5% FRR at 1 FA/h
TARGET_FA_PER_HOUR = 1.0


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
    return scored_point(threshold, match_events(events, keywords, tolerance), len(keywords), hours)


def scored_point(threshold: float, matching: Matching, keywords: int, hours: float) -> OperatingPoint:
    return OperatingPoint(
        threshold, keywords, matching.hits, matching.false_accepts, matching.wrong_label, hours
    )
