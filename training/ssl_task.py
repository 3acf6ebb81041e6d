"""Masked spectrogram modelling (SSAST/SSAMBA pretraining): token masks, the joint loss, the task.

Per clip, ``mask_count`` tokens are replaced by the learned mask embedding. The encoder output at
each masked token goes through two heads: ``cpredlayer`` for the discriminative task (InfoNCE:
the prediction must score its own raw 256-value token, from ``patchify``, above the clip's other
masked tokens; softmax over those) and ``gpredlayer`` for the generative one (MSE to the raw
token). Loss = nce + ``mse_weight`` * mse, as SSAST's joint pretraining. Unlike SSAST, which runs
the two objectives as two forward passes with two masks, both heads read one masked forward pass
(half the compute). Masked-token accuracy = the share of predictions whose best-scoring token is
their own (SSAST's ``acc``).

Patch tokens are masked in clusters (SSAST ``gen_maskid_patch``): per clip a side of 3-5 tokens,
then square clusters anchored at random tokens (the anchor is the cluster's first frequency row
and time column) until ``mask_count`` distinct tokens are covered, keeping them in the order
added and never masking token 0. SSAST's index arithmetic lets a cluster wrap from the end of one
frequency row into the next; here clusters stop at the grid edges. Frame tokens are masked
uniformly at random (SSAST ``gen_maskid_frame``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssamba_stream.model.base import SpectrogramModel, token_grid

from .config import Recipe
from .data import Batch
from .distributed import DistContext, all_reduce_sum
from .evaluation import Evaluation
from .features import fit_frames
from .rng import generator as make_generator
from .splits import Splits
from .task import Task

CLUSTER_SIDES = (3, 4, 5)


def cluster_mask_indices(grid: tuple[int, int], count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct token indices (frequency-major grid) covered by random square clusters."""
    f_dim, t_dim = grid
    total = f_dim * t_dim
    if not 0 < count < total:
        raise ValueError(f"cannot mask {count} of {total} tokens with token 0 kept: lower ssl.mask_count")
    side = CLUSTER_SIDES[int(torch.randint(len(CLUSTER_SIDES), (1,), generator=generator))]
    chosen: dict[int, None] = {}  # insertion-ordered set
    offsets = torch.arange(side)
    while len(chosen) < count:
        anchor = int(torch.randint(total, (1,), generator=generator))
        rows = anchor // t_dim + offsets
        cols = anchor % t_dim + offsets
        rows, cols = rows[rows < f_dim], cols[cols < t_dim]
        for index in (rows[:, None] * t_dim + cols[None, :]).flatten().tolist():
            if index != 0:
                chosen.setdefault(index)
    return torch.tensor(list(chosen)[:count])


def random_mask_indices(num_tokens: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct token indices uniformly at random."""
    if not 0 < count <= num_tokens:
        raise ValueError(f"cannot mask {count} of {num_tokens} tokens: lower ssl.mask_count")
    return torch.randperm(num_tokens, generator=generator)[:count]


def mask_indices(
    batch: int, grid: tuple[int, int], count: int, cluster: bool, generator: torch.Generator
) -> Tensor:
    """(batch, count) masked token indices, one draw per clip."""
    rows = [
        cluster_mask_indices(grid, count, generator)
        if cluster
        else random_mask_indices(grid[0] * grid[1], count, generator)
        for _ in range(batch)
    ]
    return torch.stack(rows)


def masked_prediction_losses(
    model: SpectrogramModel, fbank: Tensor, indices: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(nce, mse, masked-token accuracy) of one masked forward pass; ``indices`` (batch, count)."""
    batch, count = indices.shape
    patches = model.patchify(fbank)  # (batch, tokens, 256): the raw token contents
    token_mask = torch.zeros(patches.shape[:2], dtype=torch.bool, device=fbank.device).scatter_(
        1, indices, True
    )
    hidden = model.forward_features(fbank, token_mask)[:, model.config.num_extra_tokens :]
    picked = hidden.gather(1, indices[..., None].expand(-1, -1, hidden.shape[-1]))
    targets = patches.gather(1, indices[..., None].expand(-1, -1, patches.shape[-1]))
    scores = targets.float() @ model.cpredlayer(picked).float().transpose(1, 2)  # (batch, target, prediction)
    diagonal = torch.arange(count, device=fbank.device)
    nce = -torch.log_softmax(scores, dim=-1).diagonal(dim1=1, dim2=2).mean()
    accuracy = (torch.softmax(scores, dim=-1).argmax(dim=1) == diagonal).float().mean()
    mse = F.mse_loss(model.gpredlayer(picked).float(), targets.float())
    return nce, mse, accuracy


class SSLObjective(nn.Module):
    """DDP-wrappable forward: masked features -> joint loss and per-clip sums for logging."""

    def __init__(self, model: SpectrogramModel, mse_weight: float) -> None:
        super().__init__()
        self.model = model
        self.mse_weight = mse_weight

    def forward(self, fbank: Tensor, indices: Tensor) -> dict[str, Tensor]:
        nce, mse, accuracy = masked_prediction_losses(self.model, fbank, indices)
        count = torch.tensor(float(fbank.shape[0]), device=fbank.device)
        return {"loss": nce + self.mse_weight * mse, "count": count,
                "masked_accuracy": accuracy * count, "nce": nce * count, "mse": mse * count}  # fmt: skip


class SSLTask(Task):
    """Self-supervised pretraining on unlabelled audio (recipe ``task: ssl``)."""

    name = "ssl"
    main_metric = "masked_accuracy"
    ssl_heads = True

    def __init__(self, recipe: Recipe, model: SpectrogramModel, device: torch.device, splits: Splits) -> None:
        super().__init__(recipe, model, device, splits)
        self.cluster = model.config.tokens == "patch" if recipe.ssl.cluster is None else recipe.ssl.cluster
        self.objective = SSLObjective(model, recipe.ssl.mse_weight)

    def eval_items(self, batch_size: int) -> int | None:
        """A fixed number of batches: masked prediction over a whole split adds little but time."""
        return self.recipe.ssl.eval_batches * batch_size

    def features(self, waveforms: Tensor) -> Tensor:
        fbank = self.frontend(waveforms.to(self.device))
        return (
            fit_frames(fbank, self.model.config.target_length, self.mask_value)
            if self.model.config.pos_embed
            else fbank
        )

    def prepare(self, batch: Batch, generator: torch.Generator, batch_seed: int) -> dict[str, Tensor]:
        fbank = self.features(batch.waveforms)
        grid = token_grid(self.model.config, fbank.shape[1])
        indices = mask_indices(fbank.shape[0], grid, self.recipe.ssl.mask_count, self.cluster, generator)
        return {"fbank": fbank, "indices": indices.to(self.device)}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch], seed: int, context: DistContext) -> Evaluation:
        """Masked-token accuracy, nce, mse and loss over ``batches``, with masks drawn from ``seed``."""
        generator = make_generator(seed)
        names = ("loss", "count", "masked_accuracy", "nce", "mse")
        totals = torch.zeros(len(names), dtype=torch.float64)
        for batch in batches:
            if batch.size:
                out = self.objective(**self.prepare(batch, generator, seed))
                out["loss"] = out["loss"] * out["count"]
                totals += torch.stack([out[name].detach().double().cpu() for name in names])
        totals = all_reduce_sum(totals, context)
        count = max(float(totals[1]), 1.0)
        return Evaluation({name: float(value) / count for name, value in zip(names, totals.tolist(), strict=True)
                           if name != "count"})  # fmt: skip
