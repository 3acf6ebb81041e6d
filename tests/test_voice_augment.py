"""Speed perturbation, VTLP and the random equaliser (training/augment.py): what each moves, and what it keeps."""

from __future__ import annotations

import math

import numpy as np
import torch

from ssamba_stream.model.frontend import KaldiFbank
from ssamba_training.augment import change_speed, warp_and_colour

RATE = 16000


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tone_burst(freq: float, start: int, stop: int, samples: int = RATE) -> torch.Tensor:
    time = torch.arange(samples, dtype=torch.float64)
    inside = (time >= start) & (time < stop)
    return (torch.sin(2 * math.pi * freq * time / RATE) * inside).float()


def dominant_hz(clip: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(clip.double().numpy() * np.hanning(clip.numel())))
    return float(np.argmax(spectrum)) * RATE / clip.numel()


def duration(clip: torch.Tensor) -> int:
    loud = torch.nonzero(clip.abs() > 0.05).flatten()
    return int(loud[-1] - loud[0])


def energy_centre(clip: torch.Tensor) -> float:
    power = clip.double().square()
    return float((power * torch.arange(clip.numel())).sum() / power.sum())


def test_change_speed_moves_pitch_and_duration_by_the_factor_and_keeps_the_word_in_place():
    clips = torch.stack([tone_burst(1000.0, 4000, 12000), tone_burst(500.0, 2000, 9000)])
    out = change_speed(clips, (1.15, 1.15), generator=seeded())
    assert out.shape == clips.shape
    for before, after in zip(clips, out, strict=True):
        assert abs(dominant_hz(after) / dominant_hz(before) - 1.15) < 0.01
        assert abs(duration(after) / duration(before) - 1 / 1.15) < 0.01
        assert abs(energy_centre(after) - energy_centre(before)) < 20  # samples
    slower = change_speed(clips, (0.9, 0.9), generator=seeded())
    assert abs(dominant_hz(slower[0]) / 1000.0 - 0.9) < 0.01


def test_change_speed_draws_per_clip_is_seeded_and_leaves_unchosen_or_silent_clips_alone():
    clips = torch.stack([tone_burst(800.0, 3000, 13000)] * 16 + [torch.zeros(RATE)])
    first = change_speed(clips, (0.9, 1.1), generator=seeded(3))
    assert torch.equal(first, change_speed(clips, (0.9, 1.1), generator=seeded(3)))
    ratios = {round(dominant_hz(row) / 800.0, 2) for row in first[:16]}
    assert len(ratios) > 4 and min(ratios) >= 0.89 and max(ratios) <= 1.11
    assert torch.equal(first[16], clips[16])
    assert torch.equal(change_speed(clips, (0.9, 1.1), probability=0.0, generator=seeded()), clips)


def test_vtlp_moves_a_formant_by_the_warp_factor_and_nothing_else():
    frontend = KaldiFbank()
    centres = frontend.centre_frequencies()
    assert (
        abs(float(centres[0]) - 20.0) < 60 and float(centres[-1]) < 8000 and bool((centres.diff() > 0).all())
    )
    fbank = frontend(torch.stack([tone_burst(1500.0, 0, RATE)] * 64).double())
    warped = warp_and_colour(fbank, centres, max_warp=0.1, colour_db=0.0, generator=seeded())
    peak_hz = centres[warped.mean(dim=1).argmax(dim=1)]
    source_hz = float(centres[fbank.mean(dim=1).argmax(dim=1)[0]])
    spacing = float(centres.diff().max())
    assert (
        float(peak_hz.min()) >= source_hz * 0.9 - spacing
        and float(peak_hz.max()) <= source_hz * 1.1 + spacing
    )
    assert len(set(peak_hz.tolist())) > 5  # each example its own vocal tract
    assert torch.equal(warp_and_colour(fbank, centres, 0.0, 0.0), fbank)


def test_equaliser_is_one_smooth_bounded_curve_per_example_over_all_frames():
    fbank = torch.randn(8, 50, 128)
    units_per_db = 0.05
    out = warp_and_colour(fbank, KaldiFbank().centre_frequencies(), 0.0, 6.0, units_per_db=units_per_db,
                          generator=seeded(1))  # fmt: skip
    curve = out - fbank
    assert torch.allclose(curve, curve[:, :1, :].expand_as(curve), atol=1e-6)  # the same for every frame
    curve = curve[:, 0, :]
    assert float(curve.abs().max()) <= 6.0 * units_per_db + 1e-6
    assert float(curve.abs().max()) > 0.5 * units_per_db
    assert float(curve.diff(dim=1).abs().max()) < 0.05 * float(curve.abs().max()) + 1e-6  # smooth
    assert not torch.allclose(curve[0], curve[1])
