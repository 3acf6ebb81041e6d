"""What every part of the synthesizer shares: the clip format, errors, and word trimming."""

from __future__ import annotations

import hashlib

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # Speech Commands clips are 1 s
EDGE_MARGIN = SAMPLE_RATE // 100  # words end at least 10 ms inside the clip
MAX_WORD_SAMPLES = CLIP_SAMPLES - 2 * EDGE_MARGIN
QUIET_LEVEL = 2  # int16 steps; espeak-ng writes exact digital silence between utterances
# Some voices add reverberant tails or a faint hiss; whatever is this far below the loudest sample
# counts as silence, so a tail neither joins two words nor lengthens one.
QUIET_DB = -50.0
WORD_PAD_S = 0.005  # kept around the audible part of a word so that resampling keeps its edges


class SynthError(Exception):
    """A configuration problem the user can fix: reported in one line, exit status 2."""


class EngineError(RuntimeError):
    """A speech engine failed on input it should handle: reported in one line, exit status 1."""


def rng(*entropy: int) -> np.random.Generator:
    """A generator seeded by all of ``entropy``: one independent stream per speaker, noise file..."""
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


def speaker_id(speaker: str) -> str:
    """Stable 8-hex-digit id of a speaker, as in Speech Commands file names."""
    return hashlib.sha1(speaker.encode()).hexdigest()[:8]


def resample(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """int16 or float samples at ``rate`` as float32 at ``sample_rate``."""
    audio = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float32)
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def audible_spans(samples: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """[start, end) of the audible stretches of int16 samples separated by >= ``min_gap`` quiet ones."""
    level = np.abs(samples.astype(np.int32))
    if level.size == 0 or level.max() <= QUIET_LEVEL:
        return []
    loud = np.flatnonzero(level > max(QUIET_LEVEL, level.max() * 10 ** (QUIET_DB / 20)))
    breaks = np.flatnonzero(np.diff(loud) > min_gap)
    starts = np.concatenate([loud[:1], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks], loud[-1:]]) + 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def cut(samples: np.ndarray, rate: int, span: tuple[int, int], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The span plus a few ms either side, resampled to float32 at ``sample_rate``."""
    pad = round(WORD_PAD_S * rate)
    return resample(samples[max(span[0] - pad, 0) : span[1] + pad], rate, sample_rate)


def trim_word(samples: np.ndarray, rate: int) -> np.ndarray | None:
    """The audible part of a one-word recording (int16) as float32 at 16 kHz; None if it is silent."""
    spans = audible_spans(samples, min_gap=len(samples))
    return cut(samples, rate, spans[0]) if spans else None


def read_int16(path: str) -> tuple[np.ndarray, int]:
    """Mono int16 samples and rate of a WAV an engine wrote."""
    samples, rate = sf.read(path, dtype="int16", always_2d=True)
    return np.ascontiguousarray(samples[:, 0]), int(rate)


def shift_pitch(audio: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch and formants up by ``semitones`` (and shorter), as a faster tape: a smaller or larger voice."""
    if semitones == 0:
        return audio
    factor = 2.0 ** (semitones / 12.0)
    return np.ascontiguousarray(soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE), dtype=np.float32)
