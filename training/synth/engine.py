"""The plug-in interface of a speech engine: its voices, and one word rendered as 16 kHz float32.

An engine is a small class: which voices it has (``voices`` for training and validation,
``reserved`` for the independent test only, see :mod:`.voices`), whether it is installed, and how
it speaks a list of words as one voice with random prosody. A voice that fails or stays silent on
a word gives a :class:`Rendition` without audio and a reason: the data set skips that word for
that voice and reports it, it never aborts the build.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .common import EngineError, read_int16, trim_word


@dataclass(frozen=True)
class Rendition:
    """One word as spoken by one voice: trimmed float32 audio at 16 kHz, or None and the reason."""

    audio: np.ndarray | None
    params: dict[str, Any] = field(default_factory=dict)  # the prosody drawn for it, for synth_clips.csv
    problem: str = ""


class Engine(ABC):
    """A text-to-speech engine as the data set uses it."""

    name: ClassVar[str]
    binary: ClassVar[str | None] = None  # executable it needs on PATH, if any
    install: ClassVar[str] = "run training/setup_speech.sh"  # how to get it, for the error message
    voices: ClassVar[tuple[str, ...]] = ()  # usable for training and validation
    reserved: ClassVar[tuple[str, ...]] = ()  # the independent test's voices: never trained or tuned on
    # Engines write words at their own level; this peak puts them on espeak-ng's typical scale
    # before the data set's random gain (None: keep the engine's level).
    peak: ClassVar[float | None] = 0.5
    batch_words: ClassVar[int] = 64  # words per render call (the data set asks for one rendition's words)

    def available(self) -> bool:
        """Whether the engine can run here."""
        return self.binary is None or shutil.which(self.binary) is not None

    def speakers(self) -> list[str]:
        """Training/validation voices that work here (an engine may probe or combine them)."""
        return list(self.voices)

    def version(self) -> str:
        """The engine's version, recorded in the manifest (its output depends on it)."""
        return "unknown"

    @abstractmethod
    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        """Each of ``words`` spoken by ``voice`` with prosody drawn from ``rng``; one Rendition per word."""


def each_word(
    words: Sequence[str],
    speak: Callable[[str, dict[str, Any]], np.ndarray | None],
    draw: Callable[[], dict[str, Any]],
) -> list[Rendition]:
    """Renditions of ``words``, one ``speak(word, params)`` call each with ``params = draw()``.

    An EngineError or a silent result becomes that word's problem, never the whole call's.
    """
    out = []
    for word in words:
        params = draw()
        try:
            audio = speak(word, params)
        except EngineError as exc:
            out.append(Rendition(None, params, " / ".join(str(exc).splitlines())))
            continue
        out.append(Rendition(audio, params, "" if audio is not None else "produced silence"))
    return out


def run_to_wav(cmd: list[str], stdin: str | None = None) -> np.ndarray | None:
    """Run a command that writes ``{wav}`` (substituted with a temporary path); its trimmed word.

    Raises EngineError with the engine's own message when it fails or writes nothing.
    """
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        wav = str(Path(tmp) / "word.wav")
        proc = subprocess.run([arg.replace("{wav}", wav) for arg in cmd], input=stdin, capture_output=True,
                              text=True)  # fmt: skip
        if proc.returncode != 0 or not Path(wav).is_file() or Path(wav).stat().st_size <= 44:
            message = proc.stderr.strip().splitlines()[:1] or [f"exit status {proc.returncode}"]
            raise EngineError(f"{cmd[0]} failed: {message[0]}")
        return trim_word(*read_int16(wav))
