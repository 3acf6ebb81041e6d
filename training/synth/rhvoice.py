"""RHVoice: HTS statistical-parametric voices. ``slt`` and ``alan`` are CMU ARCTIC's slt and awb, the
speakers of the reserved flite/festival test voices, so they belong to the test set only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .engine import Engine, Rendition, each_word, run_to_wav

RATE_RANGE = (70, 130)  # RHVoice-test -r, percent
PITCH_RANGE = (75, 125)  # RHVoice-test -t, percent


class RhvoiceEngine(Engine):
    """RHVoice English voices through ``RHVoice-test``, one call per word (its SSML mode is unstable)."""

    name = "rhvoice"
    binary = "RHVoice-test"
    install = "run training/setup_speech.sh (Debian rhvoice and rhvoice-english, non-free)"
    voices = ("bdl", "clb", "evgeniy-eng", "lyubov")
    reserved = ("slt", "alan")

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        def draw() -> dict[str, int]:
            return {"rate": int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                    "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))}  # fmt: skip

        def speak(word: str, p: dict[str, int]) -> np.ndarray | None:
            cmd = ["RHVoice-test", "-p", voice, "-r", str(p["rate"]), "-t", str(p["pitch"]), "-o", "{wav}"]
            return run_to_wav(cmd, stdin=f"{word}\n")

        return each_word(words, speak, draw)
