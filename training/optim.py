"""Optimiser (Adam/AdamW with SSAST's parameter groups) and the learning-rate schedule.

Weight decay skips what Vim/mamba-ssm exempt: parameters flagged ``_no_weight_decay`` (A_log, D,
A_b_log, D_b), biases and norm weights (every tensor of one dimension), and the learned tokens
(cls/dist tokens, position and mask embeddings). The schedule is a pure function of the step,
the epoch and a small plateau state, so a checkpoint stores it as JSON and resumes it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import OptimSection, ScheduleSection

_NO_DECAY_NAMES = ("cls_token", "dist_token", "pos_embed", "mask_embed")
HEAD_PREFIX = "mlp_head."
POOL_PREFIX = "head_attention."


def _exempt_from_decay(name: str, param: nn.Parameter) -> bool:
    return (
        getattr(param, "_no_weight_decay", False) or param.ndim <= 1 or name.split(".")[-1] in _NO_DECAY_NAMES
    )


def _lr_scale(name: str, head_lr_scale: float, pool_lr_scale: float) -> float:
    if name.startswith(HEAD_PREFIX):
        return head_lr_scale
    return pool_lr_scale if name.startswith(POOL_PREFIX) else 1.0


def parameter_groups(
    model: nn.Module, weight_decay: float, head_lr_scale: float, pool_lr_scale: float = 1.0
) -> list[dict]:
    """Groups (decay or not) x lr scale: the classifier head's, the attention pool's, the rest's 1."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (_exempt_from_decay(name, param), _lr_scale(name, head_lr_scale, pool_lr_scale))
            groups.setdefault(key, []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if exempt else weight_decay, "lr_scale": scale}
        for (exempt, scale), params in sorted(groups.items())
    ]


def build_optimizer(
    model: nn.Module,
    section: OptimSection,
    auxiliary: nn.Module | None = None,
    auxiliary_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """Adam (L2 decay, as SSAST) or AdamW (decoupled decay) over :func:`parameter_groups`, plus a
    last group, without decay, for a task's ``auxiliary`` modules."""
    groups = parameter_groups(model, section.weight_decay, section.head_lr_scale, section.pool_lr_scale)
    if auxiliary is not None:
        groups.append(
            {"params": list(auxiliary.parameters()), "weight_decay": 0.0, "lr_scale": auxiliary_lr_scale}
        )
    kind = torch.optim.AdamW if section.name == "adamw" else torch.optim.Adam
    return kind(groups, lr=section.lr, betas=tuple(section.betas), eps=section.eps)


@dataclass
class LRSchedule:
    """lr = base * lr_scale * warm-up(step) * decay(epoch) * plateau factor.

    ``multistep``: x gamma after ``start_epoch`` epochs and every ``step_epochs`` after
    (SSAST's ``MultiStepLR(range(start, 1000, step))`` stepped once per epoch). ``plateau``: x factor
    when the validation metric (higher is better) has not improved for ``patience`` evaluations
    (``ReduceLROnPlateau(mode="max")``). ``cosine``: half a cosine from 1 after warm-up to 0 at
    ``total_steps``, so a short fine-tuning run ends annealed whatever its length.
    Warm-up is linear over the first ``warmup_steps`` steps.
    """

    section: ScheduleSection
    base_lr: float
    total_steps: int = 0  # cosine: the run's last step
    plateau_factor: float = 1.0
    best: float | None = None
    bad_evaluations: int = 0

    def factor(self, step: int, epoch: int) -> float:
        cfg = self.section
        value = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
        if cfg.kind == "multistep" and epoch >= cfg.start_epoch:
            value *= cfg.gamma ** (1 + (epoch - cfg.start_epoch) // cfg.step_epochs)
        if cfg.kind == "cosine":
            span = max(1, self.total_steps - cfg.warmup_steps)
            done = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
            value *= 0.5 * (1.0 + math.cos(math.pi * done))
        return value * self.plateau_factor

    def apply(self, optimizer: torch.optim.Optimizer, step: int, epoch: int) -> float:
        """Set every group's lr for the coming step; returns the base group's lr."""
        lr = self.base_lr * self.factor(step, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        return lr

    def observe(self, metric: float) -> None:
        """Feed an evaluation's metric (plateau schedule only)."""
        if self.section.kind != "plateau":
            return
        if self.best is None or metric > self.best:
            self.best, self.bad_evaluations = metric, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations > self.section.patience:
            self.plateau_factor *= self.section.factor
            self.bad_evaluations = 0

    def state_dict(self) -> dict:
        return {
            "plateau_factor": self.plateau_factor,
            "best": self.best,
            "bad_evaluations": self.bad_evaluations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self.best = state["best"]
        self.bad_evaluations = int(state["bad_evaluations"])
