"""Equivalence check: the exported step, fed audio in random chunk sizes, against the offline model.

Design §5: the streaming output must equal the PyTorch offline block-structured forward of the same
checkpoint on the same audio. This module measures the largest logit difference over a recording.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssamba_stream.model.checkpoint import load_model
from ssamba_stream.model.streaming import offline_stream_logits
from ssamba_stream.runtime.session import StreamingSession


def test_signal(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like test audio without a TTS engine: tone glides, bursts of noise, silence, level jumps."""
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    audio = np.zeros(total, dtype=np.float64)
    position = 0
    while position < total:
        length = int(rng.uniform(0.1, 1.2) * sample_rate)
        t = np.arange(min(length, total - position)) / sample_rate
        kind = rng.integers(4)
        if kind == 0:  # vowel-like glide with harmonics
            f0 = rng.uniform(90, 250) * (1 + 0.3 * t / max(t[-1], 1e-3))
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            segment = sum(np.sin(k * phase) / k for k in range(1, 8))
        elif kind == 1:  # fricative-like noise
            segment = rng.standard_normal(t.size)
        elif kind == 2:  # silence
            segment = np.zeros(t.size)
        else:  # low hum
            segment = np.sin(2 * np.pi * 50 * t)
        audio[position : position + t.size] = segment * 10 ** rng.uniform(-3, -0.5)
        position += t.size
    return np.clip(audio, -1, 1).astype(np.float32)


def stream_in_random_chunks(
    session: StreamingSession, audio: np.ndarray, seed: int = 0, max_chunk: int = 5000
) -> np.ndarray:
    """Logits (blocks, classes) of ``audio`` fed to ``session`` in chunks of 1..max_chunk samples."""
    rng = np.random.default_rng(seed)
    pieces, position = [], 0
    while position < audio.size:
        size = int(rng.integers(1, max_chunk + 1))
        pieces.append(session.process_detailed(audio[position : position + size])["logits"][0])
        position += size
    return np.concatenate(pieces, axis=0)


def max_logit_difference(
    model_path: str | Path,
    checkpoint: str | Path,
    audio: np.ndarray,
    backend: str = "onnxruntime",
    seed: int = 0,
) -> tuple[float, int]:
    """(max |streamed - offline| over all block logits, number of blocks compared)."""
    session = StreamingSession(model_path, backend=backend)
    streamed = stream_in_random_chunks(session, audio, seed)
    model = load_model(checkpoint).eval()
    offline = offline_stream_logits(model, torch.from_numpy(audio)[None], session.spec.block_tokens)[
        0
    ].numpy()
    if streamed.shape != offline.shape:
        raise AssertionError(
            f"streamed {streamed.shape} and offline {offline.shape} block logits differ in shape"
        )
    return float(np.abs(streamed - offline).max()), streamed.shape[0]
