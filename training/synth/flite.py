"""flite: CMU's small diphone/clustergen voices. All of them are reserved for the independent test
(kal is festival's kal_diphone, slt and awb are CMU ARCTIC speakers): never trained or tuned on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .common import shift_pitch
from .engine import Engine, Rendition, each_word, run_to_wav

STRETCH_RANGE = (0.8, 1.3)  # flite's duration_stretch
SEMITONE_RANGE = (-2.0, 2.0)


class FliteEngine(Engine):
    """flite's built-in voices, one call per word (a call costs a few ms)."""

    name = "flite"
    binary = "flite"
    install = "run training/setup_speech.sh (Debian flite)"
    reserved = ("kal", "kal16", "awb", "rms", "slt")

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        def draw() -> dict[str, float]:
            return {"stretch": round(float(rng.uniform(*STRETCH_RANGE)), 3),
                    "semitones": round(float(rng.uniform(*SEMITONE_RANGE)), 2)}  # fmt: skip

        def speak(word: str, p: dict[str, float]) -> np.ndarray | None:
            cmd = [
                "flite",
                "-voice",
                voice,
                "--setf",
                f"duration_stretch={p['stretch']}",
                "-t",
                word,
                "-o",
                "{wav}",
            ]
            audio = run_to_wav(cmd)
            return None if audio is None else shift_pitch(audio, p["semitones"])

        return each_word(words, speak, draw)
