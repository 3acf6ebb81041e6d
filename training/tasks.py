"""The registry of training tasks: recipe ``task`` name -> ``Task`` class."""

from __future__ import annotations

import torch

from ssamba_stream.model.base import SpectrogramModel

from .classify import ClassifyTask
from .config import Recipe
from .kws_stream import KwsStreamTask
from .splits import Splits
from .ssl_task import SSLTask
from .task import Task

TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassifyTask, KwsStreamTask, SSLTask)}


def build_task(recipe: Recipe, model: SpectrogramModel, device: torch.device, splits: Splits) -> Task:
    return TASKS[recipe.task](recipe, model, device, splits)
