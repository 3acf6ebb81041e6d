"""The one interface the trainer drives every training objective through (recipe key ``task``).

A task turns a batch of clips into the objective's inputs (``prepare``), owns the DDP-wrappable
``objective`` module, and evaluates a split (``evaluate``). A new objective is one module with a
``Task`` subclass, listed in ``tasks.TASKS``; the trainer, the recipe checks and the model builder
ask the class, never the task's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ssamba_stream.model.base import SpectrogramModel

from .augment import ssast_mask_value
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

    def __init__(self, recipe: Recipe, model: SpectrogramModel, device: torch.device, splits: Splits) -> None:
        self.recipe = recipe
        self.model = model
        self.device = device
        self.frontend = model.make_frontend().to(device)
        self.mask_value = ssast_mask_value(model.config.norm_mean, model.config.norm_std)

    def prepare(self, batch: Batch, generator: torch.Generator, batch_seed: int) -> dict[str, Tensor]:
        """The objective's keyword inputs for one training batch."""
        raise NotImplementedError

    def evaluate(self, batches: Iterable[Batch], seed: int, context: DistContext) -> Evaluation:
        raise NotImplementedError

    def eval_items(self, batch_size: int) -> int | None:
        """Items of a split one evaluation reads (None: all of them)."""
        return None
