"""Batched training augmentations on waveforms (batch, samples) and fbank features (batch, frames, mel).

Every random draw goes through the optional ``torch.Generator`` (a CPU generator, or one on the
data's device), so a seeded generator reproduces a batch exactly; without one, torch's global
generator is used. Inputs are never modified in place.

SSAST/SSAMBA order, for parity with their recipes: mixup on waveforms, fbank, SpecAugment, then
normalisation, then noise-and-roll. Here :class:`KaldiFbank` normalises inside, so SpecAugment
runs on normalised features: pass ``mask_value=ssast_mask_value(mean, std)`` to fill masks with
the value SSAST's zeros (applied before normalisation) end up as.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

# Below this mean power (-100 dBFS) a clip counts as silent for mix_background.
SILENT_POWER = 1e-10
TOKEN_SAMPLES = 320  # one frame token: 2 fbank frames of 10 ms at 16 kHz


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, returned on ``like``'s device."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def _randint(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Integers uniform in [low, high), on ``like``'s device."""
    device = generator.device if generator is not None else like.device
    return torch.randint(low, high, shape, generator=generator, device=device).to(like.device)


def ssast_mask_value(norm_mean: float, norm_std: float) -> float:
    """Where SSAST's zero-filled masks land after its ``(x - mean) / (2 * std)`` normalisation."""
    return (0.0 - norm_mean) / (2.0 * norm_std)


def _band_mask(size: int, param: int, batch: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """(batch, size) bool: one band per example, as torchaudio's ``mask_along_axis``.

    Width ``floor(u * param)`` (so 0 .. param - 1) and start ``floor(v * (size - u * param))``.
    """
    value = _rand((batch,), generator, like) * param
    start = (_rand((batch,), generator, like) * (size - value)).long().clamp_min(0)
    end = start + value.long()
    position = torch.arange(size, device=like.device)
    return (position >= start[:, None]) & (position < end[:, None])


def spec_augment(
    fbank: Tensor,
    freqm: int,
    timem: int,
    generator: torch.Generator | None = None,
    mask_value: float = 0.0,
) -> Tensor:
    """SpecAugment as SSAST/SSAMBA use it: per example one frequency and one time mask.

    Same distribution as torchaudio ``FrequencyMasking(freqm)`` / ``TimeMasking(timem)`` applied
    to each example separately; a parameter of 0 disables that mask.
    """
    if fbank.dim() != 3:
        raise ValueError(f"expected fbank of shape (batch, frames, mel), got {tuple(fbank.shape)}")
    batch, frames, mels = fbank.shape
    masked = torch.zeros(batch, frames, mels, dtype=torch.bool, device=fbank.device)
    if freqm > 0:
        masked |= _band_mask(mels, freqm, batch, generator, fbank)[:, None, :]
    if timem > 0:
        masked |= _band_mask(frames, timem, batch, generator, fbank)[:, :, None]
    return fbank.masked_fill(masked, mask_value)


def _beta(alpha: float, size: int, generator: torch.Generator | None) -> np.ndarray:
    """Beta(alpha, alpha) draws; torch's Beta takes no generator, so NumPy's, seeded from it."""
    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    return np.random.default_rng(seed).beta(alpha, alpha, size)


def mixup(
    waveforms: Tensor,
    targets: Tensor,
    alpha: float = 10.0,
    *,
    num_classes: int | None = None,
    probability: float = 1.0,
    per_example: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """SSAST/SSAMBA mixup: ``lam * x_i + (1 - lam) * x_j`` with ``j`` another clip of the batch.

    ``lam ~ Beta(alpha, alpha)``, per example or one per batch; an example is mixed with
    ``probability`` (SSAST's ``mixup`` rate), else keeps ``lam = 1``. ``targets`` are class
    indices (give ``num_classes``) or soft targets (batch, classes); returns the mixed
    waveforms and soft targets ``lam * y_i + (1 - lam) * y_j``. A batch of one is returned as is.
    """
    if targets.is_floating_point():
        soft = targets.float()
    else:
        if num_classes is None:
            raise ValueError("mixup of class-index targets needs num_classes")
        soft = F.one_hot(targets.long(), num_classes).float()
    batch = waveforms.shape[0]
    if batch < 2:
        return waveforms.clone(), soft
    lam = torch.as_tensor(_beta(alpha, batch if per_example else 1, generator), dtype=torch.float32)
    lam = lam.to(waveforms.device).expand(batch)
    lam = torch.where(_rand((batch,), generator, waveforms) < probability, lam, torch.ones_like(lam))
    partner = (
        torch.arange(batch, device=waveforms.device) + _randint(1, batch, (batch,), generator, waveforms)
    ) % batch
    mixed = lam[:, None] * waveforms + (1.0 - lam[:, None]) * waveforms[partner]
    soft_lam = lam.to(soft.device)[:, None]
    return mixed, soft_lam * soft + (1.0 - soft_lam) * soft[partner.to(soft.device)]


def add_noise_and_roll(
    fbank: Tensor, max_shift: int = 10, generator: torch.Generator | None = None
) -> Tensor:
    """SSAST/SSAMBA ``noise`` augmentation on normalised features, per example.

    ``fbank + U(0, 1) * rand_like(fbank) / 10``, then a circular roll in time by an integer in
    ``[-max_shift, max_shift)`` (NumPy ``randint(-10, 10)`` in SSAST).
    """
    batch, frames, mels = fbank.shape
    scale = _rand((batch, 1, 1), generator, fbank)
    noisy = fbank + _rand((batch, frames, mels), generator, fbank).to(fbank.dtype) * scale / 10
    shift = _randint(-max_shift, max_shift, (batch,), generator, fbank)
    source = (torch.arange(frames, device=fbank.device) - shift[:, None]) % frames
    return noisy.gather(1, source[:, :, None].expand(batch, frames, mels))


def time_shift(waveforms: Tensor, max_shift_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each clip by an integer in ``[-max, max]`` samples, filling with zeros (kws_streaming)."""
    batch, samples = waveforms.shape
    shift = _randint(-max_shift_samples, max_shift_samples + 1, (batch,), generator, waveforms)
    source = torch.arange(samples, device=waveforms.device) - shift[:, None]
    inside = (source >= 0) & (source < samples)
    return waveforms.gather(1, source.clamp(0, samples - 1)) * inside


def _noise_crops(
    noises: Sequence[Tensor | np.ndarray],
    which: Tensor,
    start_fraction: Tensor,
    length: int,
    like: Tensor,
) -> Tensor:
    """(len(which), length) crops of ``noises[which[i]]`` from a random start, wrapping around."""
    crops = []
    for index, fraction in zip(which.tolist(), start_fraction.tolist(), strict=True):
        noise = torch.as_tensor(noises[index], dtype=torch.float32)
        if noise.dim() != 1 or noise.numel() == 0:
            raise ValueError(
                f"noise {index} must be a non-empty 1-D waveform, got shape {tuple(noise.shape)}"
            )
        start = int(fraction * noise.numel())
        crops.append(noise[(start + torch.arange(length)) % noise.numel()])
    if not crops:
        return like.new_zeros(0, length)
    return torch.stack(crops).to(device=like.device, dtype=like.dtype)


def mix_background(
    waveforms: Tensor,
    noises: Sequence[Tensor | np.ndarray],
    snr_db_range: tuple[float, float] = (0.0, 20.0),
    probability: float = 0.8,
    *,
    silent_reference_rms: float = 0.01,
    signal_power: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add a random crop of a random noise at an SNR uniform in ``snr_db_range``, with ``probability``.

    SNR is the ratio of the clip's mean power (or of ``signal_power`` per row, such as the
    power of the words in a row of stream) to the added noise's. A silent clip (below -100 dBFS,
    e.g. Speech Commands silence) is taken to have RMS ``silent_reference_rms`` (-40 dBFS), so
    it gets noise at a small absolute level rather than an unbounded gain.
    """
    batch, samples = waveforms.shape
    if not noises or batch == 0:
        return waveforms.clone()
    which = _randint(0, len(noises), (batch,), generator, waveforms)
    crops = _noise_crops(noises, which, _rand((batch,), generator, waveforms), samples, waveforms)
    low, high = snr_db_range
    snr_db = low + (high - low) * _rand((batch,), generator, waveforms)
    apply = _rand((batch,), generator, waveforms) < probability
    if signal_power is None:
        signal_power = waveforms.double().square().mean(dim=1)
    signal_power = signal_power.to(device=waveforms.device, dtype=torch.float64)
    signal_power = torch.where(
        signal_power > SILENT_POWER, signal_power, signal_power.new_tensor(silent_reference_rms**2)
    )
    noise_power = crops.double().square().mean(dim=1)
    gain = torch.sqrt(signal_power / (noise_power.clamp_min(1e-30) * 10.0 ** (snr_db.double() / 10.0)))
    gain = torch.where((noise_power > 0) & apply, gain, torch.zeros_like(gain))
    return waveforms + gain.to(waveforms.dtype)[:, None] * crops


def prepend_past_audio(
    waveforms: Tensor,
    max_past_seconds: float,
    *,
    noises: Sequence[Tensor | np.ndarray] | None = None,
    noise_probability: float = 0.5,
    sample_rate: int = 16000,
    token_samples: int = TOKEN_SAMPLES,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Put random past audio before each clip, so a streaming model is trained mid-stream.

    Each example gets ``P`` tokens of past (uniform in 0 .. ``max_past_seconds``, whole tokens
    of ``token_samples`` so token boundaries stay aligned with the clip's): a crop of a noise
    (with ``noise_probability``, when ``noises`` are given) or of the batch's other clips, played
    back to back. Rows are ``[zeros | past | clip]``: left-padded with silence to the batch's
    longest past, so every clip ends the row and nothing follows it. Returns the rows,
    (batch, pad + samples), and per example the token index where the clip starts (the same for
    all rows in this layout); pool only tokens from there on. A batch of one without noises
    gets silence as its past.
    """
    batch, samples = waveforms.shape
    max_tokens = int(max_past_seconds * sample_rate) // token_samples
    if batch == 0 or max_tokens == 0:
        return waveforms.clone(), torch.zeros(batch, dtype=torch.long, device=waveforms.device)
    lengths = _randint(0, max_tokens + 1, (batch,), generator, waveforms) * token_samples
    pad = int(lengths.max())
    # Offset into each example's past, for every position of the pad region; < 0 before it starts.
    offset = torch.arange(pad, device=waveforms.device) - (pad - lengths[:, None])
    inside = offset >= 0
    past = waveforms.new_zeros(batch, pad)
    pool = (batch - 1) * samples  # the other clips, back to back, starting after this one
    starts = (_rand((batch,), generator, waveforms) * pool).long()
    if pool > 0:
        source = (
            torch.arange(1, batch + 1, device=waveforms.device)[:, None] * samples
            + (starts[:, None] + offset.clamp_min(0)) % pool
        ) % (batch * samples)
        past = waveforms.reshape(-1)[source] * inside
    if noises:
        use_noise = _rand((batch,), generator, waveforms) < noise_probability
        which = _randint(0, len(noises), (batch,), generator, waveforms)
        fractions = _rand((batch,), generator, waveforms)
        rows = use_noise.nonzero().flatten()
        crops = _noise_crops(noises, which[rows], fractions[rows], pad, waveforms)
        # Crops start at the row's past start: shift them right by that row's zero padding.
        shifted = crops.gather(1, offset[rows].clamp_min(0)) * inside[rows]
        past[rows] = shifted
    clip_start = torch.full((batch,), pad // token_samples, dtype=torch.long, device=waveforms.device)
    return torch.cat([past, waveforms], dim=1), clip_start


def reverberate(
    waveforms: Tensor,
    rirs: Sequence[Tensor | np.ndarray],
    probability: float = 0.5,
    level_db_range: tuple[float, float] = (-10.0, 0.0),
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Play a share of the clips in a room: convolve with a random impulse response, same length.

    Each chosen clip is convolved (FFT) with one of ``rirs`` from its direct-path peak on, so the
    word keeps its place and labels stay true; the result has the dry clip's power times a far-field
    level change uniform in ``level_db_range`` (dB), as a talker further away is also quieter.
    Every draw is made for every row, so a seeded generator gives the same batch whatever is chosen.
    """
    batch, samples = waveforms.shape
    if not rirs or batch == 0:
        return waveforms.clone()
    apply = (_rand((batch,), generator, waveforms) < probability).tolist()
    which = _randint(0, len(rirs), (batch,), generator, waveforms).tolist()
    low, high = level_db_range
    level_db = (low + (high - low) * _rand((batch,), generator, waveforms)).tolist()
    out = waveforms.clone()
    for row in (i for i in range(batch) if apply[i]):
        rir = torch.as_tensor(rirs[which[row]], dtype=torch.float32, device=waveforms.device)
        rir = rir[int(rir.abs().argmax()) :]
        size = 1 << (samples + rir.numel() - 2).bit_length()
        wet = torch.fft.irfft(torch.fft.rfft(waveforms[row].float(), size) * torch.fft.rfft(rir, size), size)[
            :samples
        ]
        dry_power, wet_power = waveforms[row].double().square().mean(), wet.double().square().mean()
        if wet_power > 0:
            gain = torch.sqrt(dry_power / wet_power) * 10.0 ** (level_db[row] / 20.0)
            out[row] = (wet * gain.to(wet.dtype)).to(waveforms.dtype)
    return out


def change_speed(
    waveforms: Tensor,
    factor_range: tuple[float, float] = (0.9, 1.1),
    probability: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Speak each chosen clip faster or slower (pitch and formants move with it), same length.

    Kaldi's speed perturbation, as a resampling by a factor uniform in ``factor_range`` (> 1 is
    faster and higher), done about the clip's centre of energy so the word stays where it was and
    its label stays true; audio stretched past the clip's ends is cut, audio shrunk away leaves
    zeros. Linear interpolation: fine for factors near 1, where the aliasing it lets through is
    small next to what the voice change teaches.
    """
    batch, samples = waveforms.shape
    low, high = factor_range
    factor = low + (high - low) * _rand((batch,), generator, waveforms)
    apply = _rand((batch,), generator, waveforms) < probability
    factor = torch.where(apply, factor, torch.ones_like(factor)).double()
    if batch == 0 or bool((factor == 1.0).all()):
        return waveforms.clone()
    power = waveforms.double().square()
    time = torch.arange(samples, device=waveforms.device, dtype=torch.float64)
    centre = (power * time).sum(dim=1) / power.sum(dim=1).clamp_min(1e-30)
    centre = torch.where(power.sum(dim=1) > 0, centre, torch.full_like(centre, (samples - 1) / 2))
    source = centre[:, None] + (time[None, :] - centre[:, None]) * factor[:, None]
    inside = (source >= 0) & (source <= samples - 1)
    left = source.floor().clamp(0, samples - 1).long()
    right = (left + 1).clamp_max(samples - 1)
    weight = (source - left).clamp(0, 1).to(waveforms.dtype)
    stretched = waveforms.gather(1, left) * (1 - weight) + waveforms.gather(1, right) * weight
    return torch.where(apply[:, None], stretched * inside, waveforms)


def warp_and_colour(
    fbank: Tensor,
    centres_hz: Tensor,
    max_warp: float = 0.1,
    colour_db: float = 6.0,
    *,
    units_per_db: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Another vocal tract and another channel for each example: VTLP and a random equaliser.

    Log-mel features (batch, frames, mel) are read at frequencies scaled by ``1 / a``, ``a``
    uniform in ``1 +- max_warp`` per example (a > 1: formants move up, a shorter vocal tract),
    by linear interpolation between the filters' ``centres_hz``; then a smooth random curve of
    up to about ``colour_db`` dB (three cosines across the band) is added, the colour that
    another synthesizer, microphone or room gives. ``units_per_db`` converts dB into the
    features' units (``ln(10) / 10 / (2 * norm_std)`` for normalised log-mel).
    """
    if fbank.dim() != 3:
        raise ValueError(f"expected fbank of shape (batch, frames, mel), got {tuple(fbank.shape)}")
    batch, _, mels = fbank.shape
    if centres_hz.numel() != mels:
        raise ValueError(f"{centres_hz.numel()} filter centres for {mels} mel bins")
    out = fbank
    if max_warp > 0:
        warp = 1.0 + max_warp * (2.0 * _rand((batch,), generator, fbank).double() - 1.0)
        centres = centres_hz.to(device=fbank.device, dtype=torch.float64)
        wanted = centres[None, :] / warp[:, None]
        position = torch.searchsorted(centres, wanted.contiguous()).clamp(1, mels - 1)
        low_hz, high_hz = centres[position - 1], centres[position]
        weight = ((wanted - low_hz) / (high_hz - low_hz)).clamp(0, 1).to(fbank.dtype)
        lower = fbank.gather(2, (position - 1)[:, None, :].expand_as(fbank))
        upper = fbank.gather(2, position[:, None, :].expand_as(fbank))
        out = lower + (upper - lower) * weight[:, None, :]
    if colour_db > 0:
        amplitude = (2.0 * _rand((batch, 3), generator, fbank) - 1.0) * (colour_db / 3.0)
        band = torch.linspace(0.0, math.pi, mels, device=fbank.device)
        shapes = torch.cos(band[None, :] * torch.arange(1, 4, device=fbank.device)[:, None])
        curve = (amplitude.to(fbank.device) @ shapes) * units_per_db
        out = out + curve[:, None, :].to(fbank.dtype)
    return out
