"""Clip classification fine-tuning as SSAST/SSAMBA do it (Speech Commands, ESC-50, manifests).

Per batch, in SSAST's order: mixup on waveforms (soft targets), log-mel features padded or cut
to the model's ``target_length`` (padding = SSAST's zeros after normalisation), SpecAugment, then
feature noise and time roll. Loss: BCE on (soft) one-hot targets or cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssamba_stream.model.base import SpectrogramModel

from .augment import add_noise_and_roll, mixup
from .config import Recipe
from .data import Batch
from .distributed import DistContext
from .evaluation import Evaluation, classification_pass
from .features import fit_frames
from .splits import Splits
from .task import Task


def classification_loss(logits: Tensor, targets: Tensor, loss: str) -> Tensor:
    """BCE with logits on soft/one-hot targets, or cross-entropy with probability targets."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, targets)


class ClassifierObjective(nn.Module):
    """DDP-wrappable forward: features -> logits -> loss, with correct-prediction counts."""

    def __init__(self, model: SpectrogramModel, loss: str) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, fbank: Tensor, targets: Tensor) -> dict[str, Tensor]:
        logits = self.model(fbank).float()
        correct = (logits.argmax(dim=-1) == targets.argmax(dim=-1)).float().sum()
        count = torch.tensor(float(fbank.shape[0]), device=fbank.device)
        return {"loss": classification_loss(logits, targets, self.loss), "count": count, "accuracy": correct}


class ClassifyTask(Task):
    """Fine-tuning a classifier on fixed-length clips (recipe ``task: classify``)."""

    name = "classify"
    main_metric = "accuracy"

    def __init__(self, recipe: Recipe, model: SpectrogramModel, device: torch.device, splits: Splits) -> None:
        super().__init__(recipe, model, device, splits)
        self.objective = ClassifierObjective(model, recipe.loss)

    def features(self, waveforms: Tensor) -> Tensor:
        """Normalised log-mel features at the model's ``target_length`` frames."""
        return fit_frames(
            self.frontend(waveforms.to(self.device)), self.model.config.target_length, self.mask_value
        )

    def prepare(self, batch: Batch, generator: torch.Generator, batch_seed: int) -> dict[str, Tensor]:
        aug = self.recipe.augment
        waveforms = self.other_voice(batch.waveforms.to(self.device), generator)
        targets = F.one_hot(batch.labels, self.model.config.num_classes).float().to(self.device)
        if aug.mixup > 0:
            waveforms, targets = mixup(
                waveforms, targets, aug.mixup_alpha, probability=aug.mixup, generator=generator
            )
        fbank = self.augment_features(self.features(waveforms), generator)
        if aug.noise:
            fbank = add_noise_and_roll(fbank, generator=generator)
        return {"fbank": fbank, "targets": targets}

    def evaluate(self, batches: Iterable[Batch], seed: int, context: DistContext) -> Evaluation:
        return classification_pass(
            batches, self.features, {"": self.model}, self.model.config.num_classes, context
        )
