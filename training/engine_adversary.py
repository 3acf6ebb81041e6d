"""Engine-adversarial training (recipe ``adversary``): the head's inputs should not tell which engine spoke.

A spotter trained on a handful of TTS engines can learn the engines' voices instead of the words
(issue 26). Domain-adversarial training (Ganin and Lempitsky, 2015; Park et al., 2024, for keyword
spotters trained on TTS) adds a small classifier that names the engine of the word the head holds,
and reverses its gradient into the encoder: the classifier learns to tell the engines apart while
the encoder is pushed to make that impossible. The classifier exists only in training (step
checkpoints keep it, for an exact resume); the exported model has nothing of it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLIPS_TABLE = "synth_clips.csv"  # ssamba_training.synth's record of every clip's engine


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; the gradient times ``-scale`` backward."""
    return _ReverseGradient.apply(x, scale)


class EngineAdversary(nn.Module):
    """Names the engine from a head input; the encoder receives its gradient reversed, times ``weight``."""

    def __init__(self, width: int, engines: tuple[str, ...], hidden: int, weight: float) -> None:
        super().__init__()
        self.engines = engines
        self.weight = weight
        self.classifier = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, len(engines)))

    def forward(self, features: Tensor, engines: Tensor) -> tuple[Tensor, Tensor]:
        """(mean cross-entropy, fraction named right) over the ``k`` rows of ``features`` (k, width)."""
        logits = self.classifier(reverse_gradient(features.float(), self.weight))
        k = max(int(engines.numel()), 1)
        loss = F.cross_entropy(logits, engines, reduction="sum") / k  # 0 (and still a graph) when k = 0
        right = (logits.argmax(dim=-1) == engines).float().sum() / k
        return loss, right


def clip_engines(root: str | Path) -> dict[str, str]:
    """``word/file.wav`` -> engine, for every clip ``synth_clips.csv`` of a synthesized data set lists."""
    table = Path(root) / CLIPS_TABLE
    try:
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        rows = None
    if not rows or "engine" not in rows[0]:
        raise ValueError(
            f"adversary needs each clip's engine from {table}, which is missing or has no engine column: "
            "build the data set with python -m ssamba_training.synth"
        )
    return {row["file"]: row["engine"] for row in rows}
