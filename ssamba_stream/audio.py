"""Audio files to mono float32 at the model's rate: decoding (soundfile), downmixing, resampling (soxr).

Shared by training, export and the torch-free runtime CLI. A file that cannot serve as audio raises
:class:`BadAudioError` naming the file and the problem: missing, undecodable, truncated (including a
WAV cut mid-download, which libsndfile would silently shorten), empty, or holding NaN/Inf.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
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


def open_audio(path: str | os.PathLike) -> sf.SoundFile:
    """Open a file for decoding after the checks every reader needs: present, decodable, not
    truncated (WAV), not empty. The caller closes it (``with open_audio(p) as f``)."""
    path = Path(path)
    if not path.is_file():
        raise BadAudioError(path, "a directory, not an audio file" if path.is_dir() else "file not found")
    try:
        file = sf.SoundFile(str(path))
    except (sf.SoundFileError, OSError) as error:
        raise BadAudioError(path, f"not a readable audio file ({_reason(error)})") from None
    problem = _riff_truncation(path) or ("contains no samples" if file.frames == 0 else None)
    if problem is not None:
        file.close()
        raise BadAudioError(path, problem)
    return file


def _read(file: sf.SoundFile, path: Path, frames: int) -> np.ndarray:
    """``frames`` frames as float32 (frames, channels); a short read or NaN/Inf is an error."""
    position = file.tell()
    try:
        data = file.read(frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as error:
        raise BadAudioError(path, f"truncated or corrupt: decoding failed ({_reason(error)})") from None
    if data.shape[0] < frames:
        raise BadAudioError(
            path, f"truncated: decoding stopped after {position + data.shape[0]} of {file.frames} samples"
        )
    if not np.isfinite(data).all():
        raise BadAudioError(path, "contains NaN or infinite samples")
    return data


def iter_audio_blocks(path: str | os.PathLike, seconds: float = 1.0) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (float32 (frames, channels), native rate) blocks of about ``seconds``: long recordings
    stream through in constant memory, with ``open_audio``'s checks and NaN/Inf checked per block."""
    path = Path(path)
    with open_audio(path) as file:
        block = max(1, int(seconds * file.samplerate))
        remaining = file.frames
        while remaining > 0:
            data = _read(file, path, min(block, remaining))
            remaining -= data.shape[0]
            yield data, file.samplerate


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
    with open_audio(path) as file:
        native_rate, total = file.samplerate, file.frames
        start = min(max(int(round(offset * native_rate)), 0), total)
        wanted = total - start
        if duration is not None:
            wanted = min(wanted, int(math.ceil(duration * native_rate)))
        if start:
            file.seek(start)
        data = _read(file, path, wanted)
    mono = data.mean(axis=1, dtype=np.float32)
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
