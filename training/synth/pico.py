"""SVOX Pico (``pico2wave``): small-footprint HMM voices, US and UK English, with SSML-like markup."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .engine import Engine, Rendition, each_word, run_to_wav

SPEED_RANGE = (75, 125)  # percent of the voice's own rate
PITCH_RANGE = (75, 130)  # percent of the voice's own pitch


class PicoEngine(Engine):
    """pico2wave's two English voices; each word its own call (a call costs ~20 ms)."""

    name = "pico"
    binary = "pico2wave"
    install = "run training/setup_speech.sh (Debian libttspico-utils, non-free)"
    voices = ("en-US", "en-GB")

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        def draw() -> dict[str, int]:
            return {"speed": int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
                    "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))}  # fmt: skip

        def speak(word: str, p: dict[str, int]) -> np.ndarray | None:
            text = f"<speed level='{p['speed']}'><pitch level='{p['pitch']}'>{word}</pitch></speed>"
            return run_to_wav(["pico2wave", "-l", voice, "-w", "{wav}", text])

        return each_word(words, speak, draw)
