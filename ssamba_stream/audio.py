"""Audio files to mono float32 at the model's rate: decoding (soundfile), downmixing, resampling (soxr).

Shared by training, export and the torch-free runtime CLI. A file that cannot serve as audio raises
:class:`BadAudioError` naming the file and the problem: missing, undecodable, truncated (including a
WAV cut mid-download, which libsndfile would silently shorten), empty, or holding NaN/Inf.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import UserError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)
# WAV writers that stream (cannot seek back) leave the data size at one of these placeholders.
_UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)


class BadAudioError(UserError):
    """A file that cannot be used as audio; ``path`` and ``problem`` feed skip reports."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"bad audio file {self.path}: {problem}")

    def __reduce__(self) -> tuple[type[BadAudioError], tuple[str, str]]:
        # Rebuild from both fields, so the error survives pickling between worker processes.
        return type(self), (self.path, self.problem)


def _riff_truncation(path: Path) -> str | None:
    """Describe a WAV whose data chunk is shorter than its header says, else None.

    libsndfile silently shortens such files to what is present, so a WAV cut mid-download
    would otherwise decode as a valid shorter clip.
    """
    with open(path, "rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        size = os.fstat(file.fileno()).st_size
        position = 12
        while position + 8 <= size:
            file.seek(position)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", file.read(8))
            if chunk_id == b"data":
                available = size - position - 8
                if chunk_size in _UNKNOWN_RIFF_SIZES or chunk_size <= available:
                    return None
                return f"truncated: the header declares {chunk_size} bytes of audio but only {available} are present"
            position += 8 + chunk_size + (chunk_size & 1)
    return None


def _reason(error: Exception) -> str:
    """libsndfile's own words for an error, without soundfile's "Error opening ..." prefix."""
    reason = getattr(error, "error_string", None) or str(error)
    return reason.strip().rstrip(".")


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate`` (channel mean, soxr HQ resampling).

    ``offset``/``duration`` (seconds) read only part of the file, so long recordings need not be
    decoded whole for one crop. Raises :class:`BadAudioError` for a missing or undecodable file,
    a truncated one, one without samples, or one containing NaN/Inf.
    """
    path = Path(path)
    if not path.is_file():
        raise BadAudioError(path, "file not found")
    try:
        file = sf.SoundFile(str(path))
    except (sf.SoundFileError, OSError) as error:
        raise BadAudioError(path, f"not a readable audio file ({_reason(error)})") from None
    with file:
        native_rate, total = file.samplerate, file.frames
        start = min(max(int(round(offset * native_rate)), 0), total)
        wanted = total - start
        if duration is not None:
            wanted = min(wanted, int(math.ceil(duration * native_rate)))
        try:
            if start:
                file.seek(start)
            data = file.read(wanted, dtype="float32", always_2d=True)
        except (sf.SoundFileError, OSError) as error:
            raise BadAudioError(path, f"truncated or corrupt: decoding failed ({_reason(error)})") from None
    truncation = _riff_truncation(path)
    if truncation is not None:
        raise BadAudioError(path, truncation)
    if total == 0:
        raise BadAudioError(path, "contains no samples")
    if data.shape[0] < wanted:
        raise BadAudioError(path, f"truncated: decoding stopped after {start + data.shape[0]} of {total} samples")
    if not np.isfinite(data).all():
        raise BadAudioError(path, "contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
