"""Evaluation results and the classification pass shared by fine-tuning and streaming KWS.

Each rank evaluates its shard (``ShardSampler``); confusion matrices and loss sums are added over
ranks, so every rank ends with the metrics of the whole split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import Batch
from .distributed import DistContext, all_reduce_sum
from .report import accuracy


@dataclass
class Evaluation:
    """Scalar metrics (``accuracy``, ``loss``, ...) and confusion matrices by report name ('' = main)."""

    metrics: dict[str, float]
    confusions: dict[str, np.ndarray] = field(default_factory=dict)


@torch.no_grad()
def classification_pass(
    batches: Iterable[Batch],
    features_of: Callable[[Tensor], Tensor],
    heads: dict[str, Callable[[Tensor], Tensor]],
    num_classes: int,
    context: DistContext,
) -> Evaluation:
    """Accuracy, mean cross-entropy and confusion (true x predicted) of every head, named by its suffix.

    Features are computed once per batch and scored by each head (e.g. one per block size).
    """
    confusions = {name: torch.zeros(num_classes, num_classes, dtype=torch.float64) for name in heads}
    loss_sums = torch.zeros(len(heads), dtype=torch.float64)
    for batch in batches:
        if not batch.size:
            continue
        features = features_of(batch.waveforms)
        for position, (name, head) in enumerate(heads.items()):
            logits = head(features).float().cpu()
            loss_sums[position] += F.cross_entropy(logits, batch.labels, reduction="sum").double()
            pairs = batch.labels * num_classes + logits.argmax(dim=-1)
            confusions[name] += (
                torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes).double()
            )
    loss_sums = all_reduce_sum(loss_sums, context)
    result = Evaluation({})
    for position, (name, confusion) in enumerate(confusions.items()):
        matrix = all_reduce_sum(confusion, context).round().long().numpy()
        result.metrics[f"accuracy{name}"] = accuracy(matrix)
        result.metrics[f"loss{name}"] = float(loss_sums[position]) / max(float(matrix.sum()), 1.0)
        result.confusions[name] = matrix
    return result
