"""Real speech for tests, synthesised with the espeak-ng binary (no audio files in the repo).

espeak-ng writes 22.05 kHz int16 WAV; it is read as float32 in [-1, 1] and resampled with soxr,
the same path a user's recording takes. Its output has exact digital silence between phrases,
which exercises the log floor and the silence/speech transitions.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ESPEAK = shutil.which("espeak-ng")
SKIP_REASON = "espeak-ng is not installed (apt-get install espeak-ng); it synthesises the test speech"


def synthesize_speech(
    text: str,
    sample_rate: int = 16000,
    voice: str = "en-us",
    word_gap_10ms: int = 0,
) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return mono float32 samples in [-1, 1] at ``sample_rate``.

    ``word_gap_10ms`` inserts extra silence between words (espeak-ng ``-g``, units of 10 ms).
    """
    if ESPEAK is None:
        raise RuntimeError(SKIP_REASON)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [ESPEAK, "-v", voice, "-g", str(word_gap_10ms), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)
