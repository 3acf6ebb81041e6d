"""The one interface the trainer drives every training objective through (recipe key ``task``).

A task turns a batch of clips into the objective's inputs (``prepare``), owns the DDP-wrappable
``objective`` module, and evaluates a split (``evaluate``). A new objective is one module with a
``Task`` subclass, listed in ``tasks.TASKS``; the trainer, the recipe checks and the model builder
ask the class, never the task's name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ssamba_stream.model.base import SpectrogramModel

from .augment import change_speed, spec_augment, ssast_mask_value, warp_and_colour
from .config import Recipe
from .data import Batch
from .distributed import DistContext
from .evaluation import Evaluation
from .splits import Splits


class Task:
    """Base of the training tasks: the recipe, the model, its frontend and fill value for masked frames."""

    name: ClassVar[str]
    main_metric: ClassVar[str]
    ssl_heads: ClassVar[bool] = False  # the model gets the SSL prediction heads instead of a classifier
    objective: nn.Module
    # Trainable modules of the objective outside the model (an adversary): optimised with it, kept in
    # step checkpoints, never exported.
    auxiliary: nn.Module | None = None
    auxiliary_lr_scale: float = 1.0

    def __init__(self, recipe: Recipe, model: SpectrogramModel, device: torch.device, splits: Splits) -> None:
        self.recipe = recipe
        self.model = model
        self.device = device
        self.frontend = model.make_frontend().to(device)
        self.mask_value = ssast_mask_value(model.config.norm_mean, model.config.norm_std)
        self.centre_hz = self.frontend.centre_frequencies()  # mel filter centres, for VTLP

    def other_voice(self, waveforms: Tensor, generator: torch.Generator) -> Tensor:
        """Speed perturbation of clips (``augment.speed``): another speaking rate, pitch and formants."""
        low, high = self.recipe.augment.speed
        if low == high == 1.0:
            return waveforms
        return change_speed(waveforms, (low, high), generator=generator)

    def augment_features(self, fbank: Tensor, generator: torch.Generator) -> Tensor:
        """Feature augmentation of every task: VTLP and a random equaliser (``augment.mel_warp``,
        ``augment.colour_db``: another vocal tract and channel), then SpecAugment."""
        aug = self.recipe.augment
        if aug.mel_warp > 0 or aug.colour_db > 0:
            units_per_db = math.log(10.0) / 10.0 / (2.0 * self.model.config.norm_std)
            fbank = warp_and_colour(fbank, self.centre_hz, aug.mel_warp, aug.colour_db,
                                    units_per_db=units_per_db, generator=generator)  # fmt: skip
        return spec_augment(fbank, aug.freqm, aug.timem, generator, mask_value=self.mask_value)

    def prepare(self, batch: Batch, generator: torch.Generator, batch_seed: int) -> dict[str, Tensor]:
        """The objective's keyword inputs for one training batch."""
        raise NotImplementedError

    def evaluate(self, batches: Iterable[Batch], seed: int, context: DistContext) -> Evaluation:
        raise NotImplementedError

    def eval_items(self, batch_size: int) -> int | None:
        """Items of a split one evaluation reads (None: all of them)."""
        return None
