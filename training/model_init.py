"""The model a recipe describes, optionally initialised from an official SSAMBA .pth or one of our checkpoints.

``init_from`` transfers what carries over between models of different kinds: the mixer layers
(``v.layers.*``) and final norm (``v.norm_f``) move between patch and frame models; the token
embedding, position embedding, extra tokens and heads are taken only where they fit (same token
kind and shape, same labels), the position embedding being cut or interpolated between patch
grids as SSAST does. Everything else starts from fresh initialisation, and the report says which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ssamba_stream.errors import CheckpointError
from ssamba_stream.formats import WEIGHTS_FILE, read_checkpoint_document
from ssamba_stream.model.base import ModelConfig, SpectrogramModel, resize_pos_embed
from ssamba_stream.model.checkpoint import infer_official_config, read_official_state
from ssamba_stream.model.registry import build_model, config_from_dict

from .config import Recipe
from .tasks import TASKS

_ENCODER_PREFIXES = ("v.layers.", "v.blocks.", "v.norm_f.", "v.norm.")
_HEAD_PREFIXES = ("mlp_head.", "head_attention.")
_SSL_PREFIXES = ("cpredlayer.", "gpredlayer.", "mask_embed")


def build_recipe_model(recipe: Recipe, labels: list[str]) -> SpectrogramModel:
    """The named config with the recipe's overrides; a classifier for ``labels``, or SSL heads for ``ssl``."""
    overrides = dict(recipe.model.overrides)
    if TASKS[recipe.task].ssl_heads:
        overrides.update(ssl_heads=True, num_classes=0, labels=[])
    else:
        overrides.update(ssl_heads=False, num_classes=len(labels), labels=list(labels))
    try:
        return build_model(recipe.model.name, **overrides)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the recipe's model does not build: {exc}") from None


@dataclass
class TransferReport:
    source: str
    transferred: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"init-from {self.source}: transferred {len(self.transferred)} tensors ({_groups(self.transferred)})"
        ]
        for name, keys in (("resized", self.resized), ("new", self.new), ("not used", self.ignored)):
            if keys:
                parts.append(f"{name}: {_groups(keys)}")
        return "; ".join(parts)


def _groups(keys: list[str]) -> str:
    """Compact listing: layer tensors counted per layer, other keys by module."""
    layers = sorted({int(k.split(".")[2]) for k in keys if k.startswith(("v.layers.", "v.blocks."))})
    others = sorted(
        {k.rsplit(".", 1)[0] if "." in k else k for k in keys if not k.startswith(("v.layers.", "v.blocks."))}
    )
    parts = [f"layers {_ranges(layers)}"] if layers else []
    return ", ".join(parts + others) or "none"


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def read_source(path: str) -> tuple[dict[str, Tensor], ModelConfig]:
    """Weights and config of an official .pth file or of one of our checkpoint directories."""
    source = Path(path)
    if source.is_file():
        state = read_official_state(source)
        return state, infer_official_config(state)
    document = read_checkpoint_document(source)
    try:
        config = config_from_dict(document["config"])
        state = load_file(str(source / WEIGHTS_FILE))
    except (TypeError, ValueError, KeyError, OSError, SafetensorError) as exc:
        raise CheckpointError(f"init-from {source}: unreadable checkpoint ({exc})") from None
    return state, config


def _kind(key: str) -> str:
    if key.startswith(_ENCODER_PREFIXES):
        return "encoder"
    if key.startswith(_HEAD_PREFIXES):
        return "head"
    if key.startswith(_SSL_PREFIXES):
        return "ssl"
    return "embedding"  # patch_embed, pos_embed, cls/dist tokens


def transfer(
    model: SpectrogramModel, state: dict[str, Tensor], source_config: ModelConfig, source: str
) -> TransferReport:
    """Copy what fits from ``state`` into ``model`` (see the module docstring) and report it."""
    config = model.config
    report = TransferReport(source)
    if source_config.arch != config.arch:
        raise CheckpointError(
            f"init-from {source}: a {source_config.arch} checkpoint cannot initialise a {config.arch} model"
        )
    same_tokens = (source_config.tokens, source_config.fshape, source_config.tshape) == (
        config.tokens,
        config.fshape,
        config.tshape,
    )
    same_labels = source_config.labels == config.labels and source_config.num_classes == config.num_classes
    target = model.state_dict()
    with torch.no_grad():
        for key, value in target.items():
            kind = _kind(key)
            incoming = state.get(key)
            usable = incoming is not None and (
                kind == "encoder" or kind == "ssl" or (kind == "head" and same_labels)
                or (kind == "embedding" and (same_tokens or key.endswith(("cls_token", "dist_token"))))
            )  # fmt: skip
            if not usable:
                report.new.append(key)
                continue
            if key == "v.pos_embed" and incoming.shape != value.shape:
                incoming = resize_pos_embed(
                    incoming, config.num_extra_tokens, source_config.grid, config.grid
                )
                report.resized.append(key)
            if incoming.shape != value.shape:
                if kind == "encoder":
                    raise CheckpointError(
                        f"init-from {source}: {key} has shape {tuple(incoming.shape)}, the model expects "
                        f"{tuple(value.shape)} (embed_dim {source_config.embed_dim} vs {config.embed_dim}?)"
                    )
                report.new.append(key)
                continue
            value.copy_(incoming.to(value.dtype))
            report.transferred.append(key)
    report.ignored = sorted(k for k in state if k not in target or k in report.new)
    return report


def initialise_from(model: SpectrogramModel, path: str) -> TransferReport:
    """Initialise ``model`` in place from ``path`` (official .pth or checkpoint directory)."""
    state, source_config = read_source(path)
    return transfer(model, state, source_config, path)


def describe_model(model: SpectrogramModel) -> str:
    """One line: config name, size and the settings that matter for training."""
    cfg = model.config
    count = sum(p.numel() for p in model.parameters())
    return f"model {cfg.name}: {count / 1e6:.3f}M parameters, {json.dumps({k: getattr(cfg, k) for k in ('tokens', 'embed_dim', 'depth', 'num_classes')})}"
