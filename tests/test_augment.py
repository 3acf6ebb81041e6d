"""training/augment.py: distributions, exact layouts and seeding of the batched augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssamba_training.augment import (
    add_noise_and_roll,
    mix_background,
    mixup,
    prepend_past_audio,
    spec_augment,
    ssast_mask_value,
    time_shift,
)

TOKEN = 320


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def band_widths(flags: torch.Tensor) -> torch.Tensor:
    """Width of the one run of True per row of a (batch, size) bool tensor; fails on two runs."""
    starts = flags & ~torch.nn.functional.pad(flags, (1, 0))[:, :-1]
    assert (starts.sum(dim=1) <= 1).all()
    return flags.sum(dim=1)


def test_spec_augment_masks_one_band_each_narrower_than_the_parameter() -> None:
    fbank = torch.rand(400, 100, 128) + 1.0  # never 0 before masking
    freqm, timem = 24, 30
    out = spec_augment(fbank, freqm, timem, generator=seeded())
    zero = out == 0
    columns, rows = zero.all(dim=1), zero.all(dim=2)
    expected = columns[:, None, :] | rows[:, :, None]
    assert torch.equal(zero, expected)  # nothing zeroed outside the two bands
    assert torch.equal(out[~expected], fbank[~expected])
    for widths, param in ((band_widths(columns), freqm), (band_widths(rows), timem)):
        assert widths.max().item() == param - 1 and widths.min().item() == 0
        assert widths.float().mean().item() == pytest.approx((param - 1) / 2, abs=1.5)  # floor(U * param)
    assert torch.equal(out, spec_augment(fbank, freqm, timem, generator=seeded()))
    assert not torch.equal(out, spec_augment(fbank, freqm, timem, generator=seeded(1)))
    assert torch.equal(spec_augment(fbank, 0, 0, generator=seeded()), fbank)


def test_ssast_mask_value_matches_masking_before_normalisation() -> None:
    mean, std = -4.2677393, 4.5689974
    raw = torch.randn(8, 50, 128) * 3 - 4
    masked_then_normalised = (spec_augment(raw, 20, 20, generator=seeded(5)) - mean) / (2 * std)
    normalised = (raw - mean) / (2 * std)
    fill = ssast_mask_value(mean, std)
    torch.testing.assert_close(
        spec_augment(normalised, 20, 20, generator=seeded(5), mask_value=fill), masked_then_normalised
    )


def test_mixup_soft_labels_and_beta_lambda() -> None:
    batch = 2000
    waveforms = torch.randn(batch, 16)
    mixed, soft = mixup(waveforms, torch.arange(batch), num_classes=batch, generator=seeded())
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(batch))
    lam = soft.diagonal()
    partner = (soft - torch.diag(lam)).argmax(dim=1)
    assert not (partner == torch.arange(batch)).any()
    torch.testing.assert_close(mixed, lam[:, None] * waveforms + (1 - lam[:, None]) * waveforms[partner])
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.std().item() == pytest.approx(math.sqrt(1 / (4 * 21)), rel=0.1)  # Beta(10, 10)

    again, again_soft = mixup(waveforms, torch.arange(batch), num_classes=batch, generator=seeded())
    assert torch.equal(mixed, again) and torch.equal(soft, again_soft)

    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    _, soft = mixup(waveforms[:4], targets, per_example=False, generator=seeded())
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(4))
    assert soft[0, 0] + soft[1, 1] > 0  # soft inputs are mixed, not replaced
    unmixed, unmixed_soft = mixup(waveforms[:4], torch.tensor([0, 1, 0, 1]), num_classes=2, probability=0.0)
    assert torch.equal(unmixed, waveforms[:4]) and unmixed_soft.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    with pytest.raises(ValueError, match="num_classes"):
        mixup(waveforms, torch.arange(batch))


def test_mixup_per_batch_uses_one_lambda() -> None:
    _, soft = mixup(
        torch.randn(64, 8), torch.arange(64), num_classes=64, per_example=False, generator=seeded()
    )
    lam = soft.diagonal()
    assert torch.allclose(lam, lam[0].expand(64))


def test_add_noise_and_roll() -> None:
    fbank = torch.arange(100, dtype=torch.float32)[None, :, None].repeat(64, 1, 4)  # frame index
    out = add_noise_and_roll(fbank, generator=seeded())
    shifts = set()
    for example in range(64):
        # Which roll makes out - roll(fbank) a noise in [0, 0.1)?
        fits = [
            s
            for s in range(-10, 10)
            if ((d := out[example] - fbank[example].roll(s, 0)) >= 0).all() and (d < 0.1).all()
        ]
        assert len(fits) == 1
        shifts.add(fits[0])
    assert min(shifts) < -5 and max(shifts) > 5
    assert torch.equal(out, add_noise_and_roll(fbank, generator=seeded()))


def test_time_shift_moves_with_zero_fill() -> None:
    waveforms = torch.rand(32, 1000) + 1.0
    out = time_shift(waveforms, 100, generator=seeded())
    for example in range(32):
        nonzero = (out[example] != 0).nonzero().flatten()
        first, last = int(nonzero[0]), int(nonzero[-1])
        shift = first if first > 0 else last - 999
        assert -100 <= shift <= 100
        torch.testing.assert_close(
            out[example], torch.nn.functional.pad(waveforms[example], (100, 100))[100 - shift : 1100 - shift]
        )
    assert torch.equal(out, time_shift(waveforms, 100, generator=seeded()))


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(signal.double().square().mean(-1) / noise.double().square().mean(-1))


@pytest.mark.parametrize("snr", [-5.0, 10.0, 30.0])
def test_mix_background_reaches_the_requested_snr(snr: float) -> None:
    rng = np.random.default_rng(0)
    speechlike = torch.randn(16, 16000) * torch.linspace(0.01, 0.5, 16)[:, None]
    speechlike[:, :4000] = 0  # leading silence counts in the clip's power
    noises = [
        rng.uniform(-1, 1, 40000).astype(np.float32),
        0.1 * rng.standard_normal(9000).astype(np.float32),
    ]
    out = mix_background(speechlike, noises, (snr, snr), probability=1.0, generator=seeded())
    added = out - speechlike
    assert (added.abs().sum(dim=1) > 0).all()
    measured = snr_db(speechlike, added)
    assert (measured - snr).abs().max().item() < 0.5


def test_mix_background_silent_clips_and_probability() -> None:
    silent = torch.zeros(8, 16000)
    noise = [np.random.default_rng(1).uniform(-1, 1, 16000).astype(np.float32)]
    out = mix_background(silent, noise, (20.0, 20.0), probability=1.0, generator=seeded())
    rms = out.square().mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.full((8,), 0.01 * 10 ** (-20 / 20)), rtol=1e-3, atol=0)
    loud = torch.randn(400, 100)
    out = mix_background(loud, noise, probability=0.8, generator=seeded())
    changed = (out != loud).any(dim=1).float().mean().item()
    assert changed == pytest.approx(0.8, abs=0.06)
    assert torch.equal(out, mix_background(loud, noise, probability=0.8, generator=seeded()))
    assert torch.equal(mix_background(loud, noise, probability=0.0), loud)


def test_prepend_past_audio_layout() -> None:
    batch, samples = 24, 16000
    # Every clip has its own constant value, so the past's origin can be read off.
    waveforms = torch.arange(1, batch + 1, dtype=torch.float32)[:, None].repeat(1, samples)
    out, start = prepend_past_audio(waveforms, 1.0, generator=seeded())
    assert out.shape[0] == batch and (out.shape[1] - samples) % TOKEN == 0
    assert start.dtype == torch.long and start.shape == (batch,)
    past_lengths = []
    for example in range(batch):
        begin = int(start[example]) * TOKEN  # token-aligned by construction
        assert begin == out.shape[1] - samples
        assert torch.equal(out[example, begin:], waveforms[example])
        past = out[example, :begin]
        values = set(past.unique().tolist())
        assert example + 1 not in values  # never the clip itself
        nonzero = (past != 0).nonzero().flatten()
        length = begin - int(nonzero[0]) if len(nonzero) else 0
        assert length % TOKEN == 0 and length <= 50 * TOKEN  # 1 s = 50 tokens of 20 ms
        past_lengths.append(length)
    assert len(set(past_lengths)) > 5
    again, again_start = prepend_past_audio(waveforms, 1.0, generator=seeded())
    assert torch.equal(out, again) and torch.equal(start, again_start)


def test_prepend_past_audio_from_noise_and_small_batches() -> None:
    waveforms = torch.ones(16, 3200)
    noise = [torch.full((500,), 7.0)]
    out, start = prepend_past_audio(waveforms, 0.5, noises=noise, noise_probability=1.0, generator=seeded())
    begin = int(start[0]) * TOKEN
    assert set(out[:, :begin].unique().tolist()) <= {0.0, 7.0} and (out[:, :begin] == 7.0).any()
    single, single_start = prepend_past_audio(waveforms[:1], 0.5, generator=seeded())
    assert not single[0, : int(single_start[0]) * TOKEN].any()  # no other clip: silence
    empty, empty_start = prepend_past_audio(waveforms[:0], 0.5)
    assert empty.shape == (0, 3200) and empty_start.shape == (0,)
