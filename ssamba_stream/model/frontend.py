"""Kaldi-compatible log-mel filterbank as an exportable ``nn.Module``, plus a streaming wrapper.

SSAMBA was trained on ``torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True,
use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)`` of a
16 kHz waveform in [-1, 1] with the clip mean subtracted, then normalised as
``(fbank - mean) / (2 * std)``. This module reproduces those features without torchaudio and
without ``torch.fft``/``stft``, so that it exports to ONNX (opset 17) and TensorRT.

Every step Kaldi applies to a frame before the power spectrum (DC-offset removal, pre-emphasis,
Hann window, zero-padding to 512 and the DFT) is linear in the frame's samples, so framing plus
all of them fold into one strided ``Conv1d`` whose weight is a precomputed (2 * 257, 400) matrix
(built in float64). The remaining steps are ``re**2 + im**2``, a matmul with the mel matrix, and
a floored log.

Because Kaldi removes the DC offset of every frame, subtracting the clip mean from the waveform
(as SSAMBA's data loader does) does not change the features. That is what lets
:class:`StreamingFbank`, which never sees the whole clip, produce exactly the offline frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Kaldi floors mel energies at FLT_EPSILON before the log.
LOG_FLOOR = float(torch.finfo(torch.float32).eps)


def _mel_scale(freq: Tensor) -> Tensor:
    """Kaldi/HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * torch.log1p(freq / 700.0)


def _hz_of_mel(mel: Tensor) -> Tensor:
    """The inverse of ``_mel_scale``."""
    return 700.0 * torch.expm1(mel / 1127.0)


def _mel_edges(num_bins: int, sample_rate: float, low_freq: float, high_freq: float) -> Tensor:
    """The ``num_bins + 2`` band edges of Kaldi's mel filters, in mel (float64): filter i rises from
    edge i, peaks at edge i + 1 and falls to edge i + 2. ``high_freq <= 0`` is an offset from Nyquist."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(
            f"mel band edges must satisfy 0 <= low_freq < high_freq <= {nyquist:g} Hz, "
            f"got low_freq={low_freq:g}, high_freq={high_freq:g}"
        )
    mel_low = _mel_scale(torch.tensor(low_freq, dtype=torch.float64))
    mel_high = _mel_scale(torch.tensor(high_freq, dtype=torch.float64))
    delta = (mel_high - mel_low) / (num_bins + 1)
    return mel_low + delta * torch.arange(num_bins + 2, dtype=torch.float64)


def _kaldi_mel_banks(
    num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float
) -> Tensor:
    """Kaldi's triangular mel filters, shape (num_bins, n_fft // 2 + 1), in float64.

    Triangles are linear in the mel domain; Kaldi evaluates them at the first ``n_fft // 2``
    FFT bins only, so the Nyquist bin always gets weight 0.
    """
    edges = _mel_edges(num_bins, sample_rate, low_freq, high_freq)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]

    bin_mel = _mel_scale(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[None, :]
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    weights = torch.where(bin_mel <= center, rising, falling)
    weights = torch.where((bin_mel > left) & (bin_mel < right), weights, torch.zeros_like(weights))
    return F.pad(weights, (0, 1))


def _frame_analysis_matrix(window_length: int, n_fft: int, preemphasis: float) -> Tensor:
    """Matrix mapping a raw frame to [Re X_0..X_K, Im X_0..X_K] after Kaldi's per-frame steps.

    Shape (2 * (n_fft // 2 + 1), window_length), float64. Composes, right to left: DC-offset
    removal, Kaldi pre-emphasis (``x[i] -= p * x[i-1]``, ``x[0] -= p * x[0]``), the symmetric
    Hann window ("hanning"), and a DFT of the frame zero-padded to ``n_fft``.
    """
    n = window_length
    eye = torch.eye(n, dtype=torch.float64)
    remove_dc = eye - 1.0 / n
    pre = eye - preemphasis * torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    pre[0, 0] = 1.0 - preemphasis
    window = torch.hann_window(n, periodic=False, dtype=torch.float64)

    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    t = torch.arange(n, dtype=torch.float64)[None, :]
    # Reduce k * t modulo n_fft exactly (both are integers) before scaling, to keep the angle small.
    angle = (2.0 * math.pi / n_fft) * torch.remainder(k * t, n_fft)
    dft = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=0)
    return dft @ (window[:, None] * (pre @ remove_dc))


def capturing_graph() -> bool:
    """True while tracing, exporting or compiling, i.e. when building a graph for ONNX/TensorRT."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


FRAME_LENGTH_MS = 25.0  # Kaldi's defaults, as SSAST extracts
FRAME_SHIFT_MS = 10.0


def frame_geometry(
    sample_rate: int, frame_length_ms: float = FRAME_LENGTH_MS, frame_shift_ms: float = FRAME_SHIFT_MS
) -> tuple[int, int]:
    """(window, hop) in samples: the frame layout without building the filter matrices (~16 ms)."""
    return int(sample_rate * frame_length_ms * 0.001), int(sample_rate * frame_shift_ms * 0.001)


class KaldiFbank(nn.Module):
    """Kaldi ``compute-fbank-feats`` log-mel features (snip_edges, no dither, no energy), batched.

    Input is float audio in [-1, 1] (as ``torchaudio.load``/``soundfile`` return it); the log-mel
    values shift by a constant if the scale differs, so integer PCM is rejected rather than
    silently accepted. A waveform shorter than one window yields zero frames, as in Kaldi, so a
    streaming caller can pass whatever it has (an exported graph, though, needs >= 1 window).
    Nothing is trainable: all constants are buffers. The output has the input's dtype.

    Precision: in float32, log-mel bins some 80 dB below a frame's loudest bin carry ~1e-4 of
    rounding noise, and float32 matrix products round differently for different input lengths,
    so chunked and whole-clip results would differ there. Eager calls therefore compute in the
    buffers' dtype, float64 by default, which makes :class:`StreamingFbank` reproduce offline
    frames exactly. While tracing, exporting or compiling the graph computes in float32, as
    ONNX Runtime and TensorRT run it; that stays within ~2e-4 of float64 on speech, closer than
    kaldi-native-fbank's own float32 (~8e-4). ``.float()`` gives the float32 arithmetic in eager
    mode too (and rounds the buffers: build a new module to get float64 back).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        frame_length_ms: float = FRAME_LENGTH_MS,
        frame_shift_ms: float = FRAME_SHIFT_MS,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        preemphasis: float = 0.97,
        norm_mean: float | None = None,
        norm_std: float | None = None,
    ) -> None:
        super().__init__()
        if (norm_mean is None) != (norm_std is None):
            raise ValueError("give both norm_mean and norm_std, or neither")
        if norm_std is not None and norm_std <= 0.0:
            raise ValueError(f"norm_std must be positive, got {norm_std}")
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.window_length, self.hop_length = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
        self.n_fft = 1 << (self.window_length - 1).bit_length()
        self.norm_mean = norm_mean
        self.norm_std = norm_std
        self.low_freq, self.high_freq = float(low_freq), float(high_freq)

        analysis = _frame_analysis_matrix(self.window_length, self.n_fft, preemphasis)
        self.register_buffer("analysis", analysis[:, None, :], persistent=False)
        mel = _kaldi_mel_banks(self.num_mel_bins, self.n_fft, float(sample_rate), low_freq, high_freq)
        self.register_buffer("mel_banks", mel.T.contiguous(), persistent=False)

    def centre_frequencies(self) -> Tensor:
        """(num_mel_bins,) float64: each mel filter's centre in Hz (for augmentations that warp frequency)."""
        edges = _mel_edges(self.num_mel_bins, self.sample_rate, self.low_freq, self.high_freq)
        return _hz_of_mel(edges[1:-1])

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi emits with snip_edges=True: only windows that fit entirely in the audio."""
        if num_samples < self.window_length:
            return 0
        return 1 + (num_samples - self.window_length) // self.hop_length

    def forward(self, waveform: Tensor, sample_rate: int | None = None) -> Tensor:
        """Log-mel features of shape (batch, frames, num_mel_bins); a 1-D input is a batch of one."""
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(
                f"audio is {sample_rate} Hz but this model expects {self.sample_rate} Hz: resample it "
                f"first (for example soxr.resample(audio, {sample_rate}, {self.sample_rate}))"
            )
        if waveform.dim() == 1:
            waveform = waveform[None]
        elif waveform.dim() != 2:
            raise ValueError(
                f"expected a waveform of shape [samples] or [batch, samples], got shape "
                f"{tuple(waveform.shape)}: squeeze the channel axis or mix down to mono first"
            )
        if not waveform.is_floating_point():
            raise ValueError(
                f"expected float audio in [-1, 1], got {waveform.dtype}: divide int16 PCM by 32768 first"
            )
        capturing = capturing_graph()
        # Not while capturing: the graph's length is dynamic, and it needs >= 1 window anyway.
        if not capturing and waveform.shape[-1] < self.window_length:
            return waveform.new_zeros(waveform.shape[0], 0, self.num_mel_bins)

        # Never below float32: the log floor (1.2e-7) and the DFT's dynamic range need it.
        dtype = torch.float32 if capturing else torch.promote_types(self.analysis.dtype, torch.float32)
        frames = F.conv1d(waveform.to(dtype)[:, None, :], self.analysis.to(dtype), stride=self.hop_length)
        spectrum = frames.transpose(1, 2)  # (batch, frames, 2 * bins): real parts, then imaginary
        n_bins = self.n_fft // 2 + 1
        power = spectrum[..., :n_bins].square() + spectrum[..., n_bins:].square()
        features = torch.log(torch.clamp_min(power @ self.mel_banks.to(dtype), LOG_FLOOR))
        if self.norm_mean is not None and self.norm_std is not None:
            features = (features - self.norm_mean) / (2.0 * self.norm_std)
        return features.to(waveform.dtype)


def fbank_step(frontend: KaldiFbank, samples: Tensor, leftover: Tensor) -> tuple[Tensor, Tensor]:
    """One fixed-size streaming step, free of Python state so it can sit inside an exported graph.

    Assumes ``samples`` is (batch, n) with n a multiple of ``frontend.hop_length`` and
    ``leftover`` is (batch, window_length - hop_length), i.e. (batch, 240) at 16 kHz: the last
    240 samples the previous step saw. Then exactly n / hop frames come out, and the returned
    leftover feeds the next step. To reproduce the offline frames of a stream, start with
    ``leftover`` = its first 240 samples and feed the rest; starting from zeros instead yields
    the frames of the stream with 240 zero samples prepended.
    """
    overlap = frontend.window_length - frontend.hop_length
    # Checked in eager mode only: while exporting, the shapes are the exporter's example inputs.
    if not capturing_graph() and (
        leftover.shape[-1] != overlap or samples.shape[-1] % frontend.hop_length != 0
    ):
        raise ValueError(
            f"fbank_step needs leftover of {overlap} samples and a chunk that is a multiple of "
            f"{frontend.hop_length} samples, got {leftover.shape[-1]} and {samples.shape[-1]}"
        )
    buffer = torch.cat([leftover, samples], dim=-1)
    return frontend(buffer), buffer[..., buffer.shape[-1] - overlap :]


class StreamingFbank:
    """Feeds a :class:`KaldiFbank` chunks of any size and yields exactly its offline frames.

    Keeps the samples not yet fully consumed between calls: the window-minus-hop overlap plus any
    tail too short to complete the next frame. Chunks are (batch, n) or (n,); all calls between
    resets must use the same batch size.
    """

    def __init__(self, frontend: KaldiFbank) -> None:
        self.frontend = frontend
        self._pending: Tensor | None = None

    @property
    def pending_samples(self) -> int:
        """Samples carried over to the next call (per stream)."""
        return 0 if self._pending is None else int(self._pending.shape[-1])

    def reset(self) -> None:
        """Forget carried samples, to start a new stream."""
        self._pending = None

    @torch.no_grad()
    def __call__(self, chunk: Tensor) -> Tensor:
        """Frames completed by this chunk, shape (batch, new_frames, mels); new_frames may be 0."""
        if chunk.dim() == 1:
            chunk = chunk[None]
        elif chunk.dim() != 2:
            raise ValueError(
                f"expected a chunk of shape [samples] or [batch, samples], got {tuple(chunk.shape)}"
            )
        if self._pending is not None:
            if self._pending.shape[0] != chunk.shape[0]:
                raise ValueError(
                    f"chunk has batch size {chunk.shape[0]} but this stream has {self._pending.shape[0]}: "
                    "call reset() before starting streams of another batch size"
                )
            chunk = torch.cat([self._pending, chunk], dim=-1)
        n_frames = self.frontend.num_frames(chunk.shape[-1])
        consumed = n_frames * self.frontend.hop_length
        used = consumed - self.frontend.hop_length + self.frontend.window_length if n_frames else 0
        frames = self.frontend(chunk[:, :used])
        self._pending = chunk[:, consumed:]
        return frames
