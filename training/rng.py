"""Random-number state: seeding, derived per-batch seeds, and the global generators' state as tensors.

Augmentations draw from a generator seeded by (seed, epoch, batch, rank), so they need no saved
state; the global generators (torch's drives stochastic depth) are captured as tensors so that
a training checkpoint stores them in safetensors, never pickled.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

_MT_WORDS = 624  # Mersenne Twister state words (NumPy and Python)


def derive_seed(*entropy: int) -> int:
    """A 63-bit seed mixed from integers (NumPy SeedSequence), for independent reproducible streams."""
    return int(
        np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator with ``seed``."""
    return torch.Generator().manual_seed(seed)


def capture() -> dict[str, Tensor]:
    """The global generators' states as tensors (same names and shapes on every process)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    if kind != "MT19937":
        raise RuntimeError(f"unexpected NumPy generator {kind}")
    version, words, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_extra": torch.tensor([position, has_gauss, cached], dtype=torch.float64),
        "python_words": torch.tensor(words, dtype=torch.int64),
        "python_extra": torch.tensor(
            [version, gauss_next is not None, 0.0 if gauss_next is None else gauss_next], dtype=torch.float64
        ),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore(state: dict[str, Tensor]) -> None:
    """Set the global generators from :func:`capture`'s tensors."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    position, has_gauss, cached = state["numpy_extra"].tolist()
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    if keys.shape != (_MT_WORDS,):
        raise ValueError(f"NumPy generator state has {keys.shape} words, expected {_MT_WORDS}")
    np.random.set_state(("MT19937", keys, int(position), int(has_gauss), float(cached)))
    version, has_next, gauss_next = state["python_extra"].tolist()
    words = tuple(int(w) for w in state["python_words"].tolist())
    random.setstate((int(version), words, gauss_next if has_next else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))
