"""Background noise for ``_background_noise_``: coloured noise and babble of many espeak-ng talkers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .common import SAMPLE_RATE
from .espeak import SpeechParams, synthesize

NOISE_KINDS = ("white", "pink", "brown", "babble")
# Words the babble noise is made of; keywords are removed at run time so that noise never says one.
BABBLE_VOCABULARY = (
    "the", "a", "and", "then", "we", "they", "you", "I", "it", "was", "is", "will", "have", "had",
    "said", "think", "maybe", "really", "people", "time", "year", "day", "work", "place", "small",
    "large", "little", "never", "always", "before", "after", "because", "about", "could", "would",
    "should", "water", "coffee", "morning", "evening", "table", "window", "garden", "market",
    "minute", "street", "friend", "family", "question", "answer", "number", "paper", "kitchen",
    "there", "here", "with", "from", "into", "over", "under", "again", "very", "quite", "much",
    "many", "some", "every", "other", "another", "talk", "walk", "bring", "take", "make", "look",
    "find", "give", "tell", "ask", "seem", "feel", "leave", "call", "keep", "remember", "weather",
    "tomorrow", "yesterday", "probably", "certainly", "perhaps", "story", "music", "dinner",
)  # fmt: skip


def colored_noise(
    kind: str, n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, f_min: float = 20.0
) -> np.ndarray:
    """Zero-mean, unit-RMS float32 noise with power spectrum 1/f^0 (white), 1/f (pink) or 1/f^2 (brown).

    Shaped in the frequency domain; bins below ``f_min`` are removed (as a microphone's high-pass
    would) so that brown noise does not drift like a DC offset over a 1 s crop.
    """
    exponents = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if kind not in exponents:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {sorted(exponents)}")
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    gain = np.zeros_like(freqs)
    keep = freqs >= max(f_min, freqs[1] if freqs.size > 1 else 0.0)
    gain[keep] = freqs[keep] ** (-exponents[kind] / 2.0)
    return unit_rms(np.fft.irfft(spectrum * gain, n))


def unit_rms(x: np.ndarray) -> np.ndarray:
    """``x`` minus its mean, scaled to RMS 1 (left at zero when silent), float32."""
    x = x - x.mean()
    rms = float(np.sqrt(np.mean(np.square(x))))
    return (x / rms if rms > 0 else x).astype(np.float32)


def _sentences(rng: np.random.Generator, vocabulary: Sequence[str], n_words: int) -> str:
    words = [vocabulary[i] for i in rng.integers(len(vocabulary), size=n_words)]
    out, start = [], 0
    while start < len(words):
        stop = start + int(rng.integers(3, 10))
        sentence = " ".join(words[start:stop])
        out.append(sentence[:1].upper() + sentence[1:] + str(rng.choice([".", ",", "?", "."])))
        start = stop
    return " ".join(out)


def babble(
    n: int,
    rng: np.random.Generator,
    speakers: Sequence[str],
    vocabulary: Sequence[str] = BABBLE_VOCABULARY,
    streams: int = 6,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Unit-RMS float32 babble: ``streams`` overlapping talkers, each a chain of random espeak-ng speakers."""
    mix = np.zeros(n, dtype=np.float64)
    for _ in range(streams):
        parts, total = [], 0
        while total < n:
            seconds = min((n - total) / sample_rate, 10.0)
            text = _sentences(rng, vocabulary, max(3, round(seconds * 2.5)))
            speaker = speakers[int(rng.integers(len(speakers)))]
            part = unit_rms(synthesize(text, speaker, SpeechParams.sample(rng), sample_rate))
            parts.append(part)
            total += part.size
        stream = np.concatenate(parts)
        start = int(rng.integers(stream.size - n + 1))
        mix += stream[start : start + n] * 10 ** (rng.uniform(-6.0, 0.0) / 20)
    return unit_rms(mix)
