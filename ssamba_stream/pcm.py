"""Caller PCM -> the model's float32 mono stream: dtype conversion, downmix, streaming resampling.

Microphones, stdin and files hand over audio in whatever format they have (int16, int32, float64,
interleaved stereo, 44.1 or 48 kHz). ``PcmAdapter`` converts each chunk as it arrives and keeps
the resampler's filter state between chunks, so a stream resampled chunk by chunk equals the
whole recording resampled at once (up to the resampler's delay, which ``flush`` releases).
"""

from __future__ import annotations

import warnings

import numpy as np
import soxr

from .errors import InputWarning, UserError

MAX_CHANNELS = 64  # more than any audio interface: a wider array is (channels, samples) the wrong way round
FAR_OUTSIDE = 2.0  # float PCM beyond this is not in [-1, 1] scaled wrongly, not a hot recording
_INT_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


def _check_float_range(pcm: np.ndarray) -> None:
    """NaN/Inf is an error; samples far outside [-1, 1] a warning (once): the model hears clipping."""
    peak = float(np.abs(pcm).max(initial=0.0))
    if peak > FAR_OUTSIDE:
        warnings.warn(
            f"float PCM reaches {peak:g}, far outside [-1, 1]: scale it (int16 values as floats: divide by 32768)",
            InputWarning,
            stacklevel=5,
        )


def to_float_mono(pcm: np.ndarray) -> np.ndarray:
    """(samples,) or (samples, channels) of int8/16/32 or float -> float32 mono in [-1, 1]."""
    pcm = np.asarray(pcm)
    if pcm.ndim not in (1, 2):
        raise UserError(f"expected PCM of shape (samples,) or (samples, channels), got {pcm.shape}")
    if pcm.ndim == 2 and pcm.shape[1] > MAX_CHANNELS:
        raise UserError(
            f"expected PCM of shape (samples, channels), got {pcm.shape}: {pcm.shape[1]} channels is no recording; "
            "for a (channels, samples) array pass pcm.T"
        )
    if pcm.ndim == 2 and pcm.shape[1] == 1:  # mono as one column: no downmix (a third of a chunk's cost)
        pcm = pcm[:, 0]
    if pcm.dtype in _INT_SCALE:
        pcm = pcm.astype(np.float32) / np.float32(_INT_SCALE[pcm.dtype])
    elif pcm.dtype == np.uint8:  # unsigned 8-bit PCM is offset by 128
        pcm = (pcm.astype(np.float32) - 128.0) / 128.0
    elif pcm.dtype.kind == "f":
        pcm = pcm.astype(np.float32, copy=False)
        _check_float_range(pcm)
    else:
        raise UserError(
            f"unsupported PCM dtype {pcm.dtype}: pass integer PCM (int8/16/32) or floats in [-1, 1]"
        )
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(pcm, dtype=np.float32)


class PcmAdapter:
    """Converts chunks of one stream at ``input_rate`` to float32 mono at ``model_rate``."""

    def __init__(self, input_rate: int, model_rate: int) -> None:
        if not (isinstance(input_rate, (int, np.integer)) and input_rate > 0):
            raise UserError(f"sample rate must be a positive whole number of Hz, got {input_rate!r}")
        self.input_rate = int(input_rate)
        self.model_rate = model_rate
        self.input_samples = 0
        if self.input_rate < model_rate:
            warnings.warn(
                f"audio at {self.input_rate} Hz is upsampled to the model's {model_rate} Hz: it holds nothing above "
                f"{self.input_rate // 2} Hz, so expect fewer detections (record at {model_rate} Hz or more)",
                InputWarning,
                stacklevel=3,
            )
        self._resampler = (
            None
            if self.input_rate == model_rate
            else soxr.ResampleStream(self.input_rate, model_rate, 1, dtype="float32", quality="HQ")
        )

    @property
    def resampling(self) -> bool:
        return self._resampler is not None

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self.input_samples / self.input_rate

    def convert(self, pcm: np.ndarray) -> np.ndarray:
        mono = to_float_mono(pcm)
        self.input_samples += len(mono)
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(mono, last=False)

    def flush(self) -> np.ndarray:
        """The resampler's delayed tail at the end of a stream (empty without resampling)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
