"""Audio files to mono float32 at the model's rate: decoding (soundfile), downmixing, resampling (soxr).

Shared by training, export and the torch-free runtime CLI. A file that cannot serve as audio raises
:class:`BadAudioError` naming the file and the problem: missing, undecodable, truncated (including a
WAV cut mid-download, which libsndfile would silently shorten), empty, or holding NaN/Inf.
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


@dataclass(frozen=True)
class _DataChunk:
    """Where a WAV's data chunk size is written, what it declares, and how many bytes follow it."""

    endian: str
    size_at: int
    declared: int
    available: int


def _wav_data_chunk(handle: BinaryIO) -> _DataChunk | None:
    """The data chunk of a RIFF/RIFX WAV (None for any other format or no data chunk)."""
    handle.seek(0)
    head = handle.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    size = handle.seek(0, os.SEEK_END)
    position = 12
    while position + 8 <= size:
        handle.seek(position)
        chunk_id, chunk_size = struct.unpack(endian + "4sI", handle.read(8))
        if chunk_id == b"data":
            return _DataChunk(endian, position + 4, chunk_size, size - position - 8)
        position += 8 + chunk_size + (chunk_size & 1)
    return None


class _SizePatched:
    """A WAV read with its data chunk's size field replaced: the file object libsndfile reads
    when a streaming writer left the size at 0 (libsndfile would then decode no samples)."""

    def __init__(self, handle: BinaryIO, chunk: _DataChunk) -> None:
        self._handle = handle
        self._at, self._patch = chunk.size_at, struct.pack(chunk.endian + "I", chunk.available)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, count: int = -1) -> bytes:
        start = self._handle.tell()
        data = self._handle.read(count)
        low, high = max(self._at, start), min(self._at + 4, start + len(data))
        if low >= high:
            return data
        return data[: low - start] + self._patch[low - self._at : high - self._at] + data[high - start :]


def _open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, seekable: ``-`` is standard input, and pipes or devices (``/dev/stdin``,
    process substitution) are read whole, since decoders seek."""
    if str(path) == "-":
        if sys.stdin is None:
            raise BadAudioError(path, "standard input is closed: pipe or redirect audio into it")
        return io.BytesIO(sys.stdin.buffer.read())
    if path.is_dir():
        raise BadAudioError(path, "a directory, not an audio file")
    if not path.exists():
        raise BadAudioError(path, "file not found")
    if path.is_file():
        return open(path, "rb")
    with open(path, "rb") as stream:
        return io.BytesIO(stream.read())


def _reason(error: Exception) -> str:
    """libsndfile's own words for an error, without soundfile's "Error opening ..." prefix."""
    reason = getattr(error, "error_string", None) or str(error)
    return reason.strip().rstrip(".")


class _AudioFile(sf.SoundFile):
    """A SoundFile that also closes the byte source it was checked through."""

    def __init__(self, source: str | BinaryIO | _SizePatched, handle: BinaryIO) -> None:
        self._handle = handle
        super().__init__(source)

    def close(self) -> None:
        super().close()
        self._handle.close()


def open_audio(path: str | os.PathLike) -> sf.SoundFile:
    """Open a file for decoding after the checks every reader needs: present, decodable, not
    truncated (WAV), not empty. ``-`` reads standard input. The caller closes it
    (``with open_audio(p) as f``)."""
    path = Path(path)
    handle = _open_bytes(path)
    try:
        file = _AudioFile(_checked_source(path, handle), handle)
    except (sf.SoundFileError, OSError) as error:
        handle.close()
        raise BadAudioError(path, f"not a readable audio file ({_reason(error)})") from None
    except BadAudioError:
        handle.close()
        raise
    if file.frames == 0:
        file.close()
        raise BadAudioError(path, "contains no samples")
    return file


def _checked_source(path: Path, handle: BinaryIO) -> str | BinaryIO | _SizePatched:
    """What libsndfile should read: the path itself, the bytes read from a pipe, or a WAV whose
    placeholder data size (a streaming writer's 0) is replaced by the bytes present."""
    if handle.read(1) == b"":
        raise BadAudioError(path, "empty (0 bytes), not a recording")
    chunk = _wav_data_chunk(handle)
    handle.seek(0)
    if chunk is not None and chunk.declared not in _UNKNOWN_RIFF_SIZES and chunk.declared > chunk.available:
        raise BadAudioError(
            path,
            f"truncated: the header declares {chunk.declared} bytes of audio but only {chunk.available} are present",
        )
    if chunk is not None and chunk.declared == 0 and chunk.available > 0:
        return _SizePatched(handle, chunk)
    return str(path) if isinstance(handle, io.BufferedReader) else handle


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


def audio_seconds(path: str | os.PathLike) -> float:
    """Length of a recording in seconds, from its header (after ``open_audio``'s checks)."""
    with open_audio(path) as file:
        return file.frames / file.samplerate


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
