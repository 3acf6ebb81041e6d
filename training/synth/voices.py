"""Which speakers go into which split, and the rule that keeps the test's voices out of the rest.

A speaker is one voice of one engine. Splits are chosen by engine (``espeak``, ``rhvoice``), by
voice (``rhvoice:bdl``) or, for the test, ``reserved``: every engine's reserved voices. Reserved
voices (flite; festival kal_diphone, ked_diphone, cmu_us_slt_arctic_hts; RHVoice slt and alan: the
same human speakers) exist to measure generalisation to voices nothing was chosen on, so asking
for one in a training or validation split is an error, wherever the request comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .common import SynthError, speaker_id
from .engine import Engine
from .engines import ENGINES

RESERVED = "reserved"  # selection name of every engine's reserved voices (test split only)
TEST_SPLIT = "testing"


@dataclass(frozen=True)
class Speaker:
    """One voice of one engine."""

    engine: str
    voice: str

    @property
    def key(self) -> str:
        """Its name in file lists and ids: espeak-ng speakers keep their bare names (``en-us+m3``)."""
        return self.voice if self.engine == "espeak" else f"{self.engine}:{self.voice}"

    @property
    def id(self) -> str:
        return speaker_id(self.key)

    @property
    def reserved(self) -> bool:
        return self.voice in ENGINES[self.engine].reserved


def check_split(split: str, speakers: Iterable[Speaker]) -> None:
    """Refuse reserved voices anywhere but the test split."""
    if split == TEST_SPLIT:
        return
    bad = sorted(s.key for s in speakers if s.reserved)
    if bad:
        raise SynthError(
            f"{', '.join(bad)} reserved for the independent test: never use them for {split} (--test-engines only)"
        )


def _engine(name: str, engines: dict[str, Engine]) -> Engine:
    if name not in ENGINES:
        raise SynthError(
            f"unknown speech engine {name!r} (available: {', '.join(ENGINES)}, or {RESERVED} for the test)"
        )
    if name not in engines:
        engines[name] = ENGINES[name]()
    engine = engines[name]
    if not engine.available():
        raise SynthError(f"speech engine {name} is not installed: {engine.install}")
    return engine


def select(items: Sequence[str], split: str, engines: dict[str, Engine]) -> list[Speaker]:
    """The speakers that ``items`` (``engine``, ``engine:voice`` or ``reserved``) name for ``split``.

    ``engines`` holds engine instances by name (created on first use, so options such as espeak-ng's
    voices and variants can be set up front). An engine name means its training voices, or in the
    test split its reserved ones.
    """
    chosen: list[Speaker] = []
    for item in items:
        name, _, voice = item.partition(":")
        if name == RESERVED and not voice:
            if split != TEST_SPLIT:
                raise SynthError(f"{RESERVED} voices are for the independent test only, not for {split}")
            chosen += [Speaker(n, v) for n, cls in ENGINES.items() if cls.reserved and cls().available()
                       for v in cls.reserved]  # fmt: skip
            continue
        if name in ENGINES and split != TEST_SPLIT:
            check_split(split, [Speaker(name, voice)] if voice else [])
            if not voice and not ENGINES[name].voices and ENGINES[name].reserved:
                raise SynthError(
                    f"all of {name}'s voices are reserved for the independent test: use --test-engines"
                )
        engine = _engine(name, engines)
        if voice:
            if voice not in (*engine.voices, *engine.reserved) and name != "espeak":
                raise SynthError(
                    f"{name} has no voice {voice!r} (voices: {', '.join(engine.voices + engine.reserved)})"
                )
            chosen.append(Speaker(name, voice))
        elif split == TEST_SPLIT:
            if not engine.reserved:
                raise SynthError(f"{name} has no reserved test voices: name them as {name}:VOICE")
            chosen += [Speaker(name, v) for v in engine.reserved]
        else:
            chosen += [Speaker(name, v) for v in engine.speakers()]
    check_split(split, chosen)
    return chosen
