"""Feature shaping shared by the tasks: SSAST's fixed-length spectrograms."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def fit_frames(fbank: Tensor, frames: int, pad_value: float) -> Tensor:
    """Cut or pad (with ``pad_value``) features (batch, frames, mel) to ``frames`` frames, as SSAST's loader does."""
    missing = frames - fbank.shape[1]
    if missing > 0:
        return F.pad(fbank, (0, 0, 0, missing), value=pad_value)
    return fbank[:, :frames]
