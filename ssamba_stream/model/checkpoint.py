"""Model checkpoints: safetensors weights + JSON config (never pickle), and the official SSAMBA importer.

A checkpoint is a directory holding ``model.safetensors`` and ``config.json``; it is written to a
temporary sibling directory, fsynced and renamed into place, so a crash never leaves a half-written
checkpoint under the final name.

Official SSAMBA ``.pth`` files are DataParallel state dicts (``module.`` prefix, encoder under
``module.v.``). They are read with ``torch.load(weights_only=True)`` and imported strictly: every key
in the file is mapped or explicitly ignored (and reported), every parameter of the model is filled,
and anything else is an error naming the key (the official loader uses ``strict=False`` and drops
mismatched layers silently).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import CheckpointError
from ..formats import CHECKPOINT_FORMAT, CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_document
from .base import ModelConfig, SpectrogramModel, resize_pos_embed
from .registry import build_model, config_from_dict
from .ssamba import SSAMBA, SSAMBAConfig


# ---------------------------------------------------------------------------------- atomic writes
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_directory_atomically(target: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> content) as directory ``target``, all or nothing.

    The files are written into a temporary sibling directory and fsynced, then the directory is
    renamed over ``target`` (an existing one is moved aside first and removed after).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name, content in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(staging)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
        os.rename(staging, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def tensors_to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise tensors to safetensors bytes (contiguous CPU copies)."""
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


# ---------------------------------------------------------------------------------- our format
def model_files(model: SpectrogramModel, metadata: dict | None = None) -> dict[str, bytes]:
    """The files of a model checkpoint (weights + config), for one atomic directory write."""
    document = {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(), "metadata": metadata or {}}
    return {
        WEIGHTS_FILE: tensors_to_bytes(model.state_dict()),
        CONFIG_FILE: (json.dumps(document, indent=2) + "\n").encode(),
    }


def save_model(model: SpectrogramModel, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save weights and config atomically; ``metadata`` (JSON-able) is kept in config.json."""
    return write_directory_atomically(directory, model_files(model, metadata))


def read_checkpoint_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """The config and metadata of a checkpoint directory, validated."""
    document = read_checkpoint_document(directory)
    try:
        config = config_from_dict(document["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE} has an invalid model config: {exc}") from None
    return config, document.get("metadata", {})


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> SpectrogramModel:
    """Rebuild a model from a checkpoint directory; every weight must be present with its shape."""
    config, _ = read_checkpoint_config(directory)
    weights_path = Path(directory) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing: the checkpoint is incomplete")
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is corrupt ({exc}): re-save the checkpoint") from None
    model = build_model(config)
    load_state_strict(model, state, source=str(weights_path))
    return model.to(map_location)


def load_state_strict(model: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict that names the first missing, unexpected or mis-shaped key in its error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} weight(s) of the model, e.g. {missing[0]!r}")
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} weight(s) the model lacks, e.g. {unexpected[0]!r}"
        )
    for key, target in expected.items():
        if state[key].shape != target.shape:
            raise CheckpointError(
                f"{source}: {key!r} has shape {tuple(state[key].shape)}, the model expects {tuple(target.shape)}"
            )
    model.load_state_dict(state)


# ---------------------------------------------------------------------------------- official import
# Keys of official files that carry no weight of ours: Vim's unused 1000-way ImageNet head, and the
# pretraining input size, which the importer reads into the config.
_OFFICIAL_IGNORED_PREFIXES = ("v.head.",)
_OFFICIAL_INPUT_SIZE = ("p_input_fdim", "p_input_tdim")
_HEAD_PREFIXES = {"mlp_head": ("mlp_head.",), "ssl": ("cpredlayer.", "gpredlayer.", "mask_embed")}


@dataclass
class ImportReport:
    """What the official importer did with every key, for the user to read."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # in the file, deliberately unused
    initialised: list[str] = field(default_factory=list)  # new in the model (e.g. a new head)
    resized: list[str] = field(default_factory=list)  # position embedding cut/interpolated

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        for name, keys in (
            ("ignored", self.ignored),
            ("newly initialised", self.initialised),
            ("resized", self.resized),
        ):
            if keys:
                parts.append(f"{name}: {', '.join(keys)}")
        return "; ".join(parts)


def read_official_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """An official .pth state dict without its DataParallel ``module.`` prefix (no pickle code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"official checkpoint {path} not found: download amba_*.pth from the SSAMBA README"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint / truncated / pickled-code files
        raise CheckpointError(
            f"{path} is not a readable weights-only PyTorch checkpoint: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors: is it an official SSAMBA checkpoint?"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def infer_official_config(state: dict[str, Tensor], **overrides) -> SSAMBAConfig:
    """The config of an official checkpoint, read from its weights; ``overrides`` adapt it.

    Strides are not stored in a state dict: they default to the kernel size (the pretraining
    setting); pass ``fstride``/``tstride`` for a model fine-tuned with overlapping patches.
    """
    try:
        embed_dim, _, fshape, tshape = state["v.patch_embed.proj.weight"].shape
    except KeyError:
        raise CheckpointError(
            "not an official SSAMBA checkpoint: 'module.v.patch_embed.proj.weight' is missing"
        ) from None
    layer_ids = {int(k.split(".")[2]) for k in state if k.startswith("v.layers.")}
    if not layer_ids:
        raise CheckpointError("not an official SSAMBA checkpoint: it has no 'module.v.layers.*' weights")
    depth = 1 + max(layer_ids)
    has_cls = "v.cls_token" in state
    config = dict(
        name="ssamba-official",
        embed_dim=embed_dim,
        depth=depth,
        fshape=fshape,
        tshape=tshape,
        fstride=overrides.get("fstride", fshape),
        tstride=overrides.get("tstride", tshape),
        tokens="frame" if fshape == 128 else "patch",
        cls_token=has_cls,
        pos_embed="v.pos_embed" in state,
        norm="layernorm" if "v.norm_f.bias" in state else "rmsnorm",
        bidirectional="v.layers.0.mixer.conv1d_b.weight" in state,
        pair_layers=depth % 2 == 0,
        final_norm_twice=True,
        d_state=state["v.layers.0.mixer.A_log"].shape[1],
        d_conv=state["v.layers.0.mixer.conv1d.weight"].shape[-1],
        expand=state["v.layers.0.mixer.in_proj.weight"].shape[0] // (2 * embed_dim),
        num_classes=state["mlp_head.1.weight"].shape[0] if "mlp_head.1.weight" in state else 0,
        ssl_heads="mask_embed" in state,
    )
    if config["pos_embed"] and "p_input_tdim" in state:
        config["target_length"] = int(state["p_input_tdim"])
    elif config["pos_embed"]:  # fine-tuned file: the time extent follows from the grid size
        num_mel_bins = overrides.get("num_mel_bins", 128)
        f_dim = (num_mel_bins - fshape) // config["fstride"] + 1
        t_dim = (state["v.pos_embed"].shape[1] - int(has_cls)) // f_dim
        config["target_length"] = (t_dim - 1) * config["tstride"] + tshape
    config.update(overrides)
    try:
        return SSAMBAConfig(**config)
    except ValueError as exc:
        raise CheckpointError(f"the official checkpoint does not fit the requested config: {exc}") from None


def import_official(path: str | os.PathLike, **overrides) -> tuple[SSAMBA, ImportReport]:
    """Build our model from an official SSAMBA .pth (pretrained or fine-tuned), strictly.

    ``overrides`` change the config (e.g. ``target_length=128, num_classes=35`` to fine-tune a
    pretrained model on 1 s clips): the position embedding is then cut or interpolated, a new
    classifier head is initialised, and the SSL heads are dropped unless ``ssl_heads=True``.
    Everything else must match exactly.
    """
    return import_official_state(read_official_state(path), source=str(path), **overrides)


def import_official_state(
    state: dict[str, Tensor], source: str = "state dict", **overrides
) -> tuple[SSAMBA, ImportReport]:
    """``import_official`` for a state dict already in memory (``module.`` prefix optional)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    file_config = infer_official_config(state)
    config = infer_official_config(state, **overrides)
    model = SSAMBA(config)
    expected = model.state_dict()
    report = ImportReport()
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_OFFICIAL_IGNORED_PREFIXES) or key in _OFFICIAL_INPUT_SIZE:
            report.ignored.append(key)
        elif key in expected:
            mapped[key] = value
        elif _is_replaced_head(key, file_config, config):
            report.ignored.append(key)
        else:
            raise CheckpointError(
                f"{source}: key 'module.{key}' is not part of the {config.name} model ({_describe(config)})"
            )
    for key, target in expected.items():
        if key not in mapped:
            if not _is_replaced_head(key, file_config, config):
                raise CheckpointError(f"{source}: the model needs 'module.{key}', which the checkpoint lacks")
            report.initialised.append(key)
            continue
        value = mapped[key]
        if key == "v.pos_embed" and value.shape != target.shape:
            value = resize_pos_embed(value, config.num_extra_tokens, file_config.grid, config.grid)
            report.resized.append(key)
        if value.shape != target.shape:
            raise CheckpointError(
                f"{source}: 'module.{key}' has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
            )
        target.copy_(value.to(target.dtype))
        report.loaded.append(key)
    return model, report


def _is_replaced_head(key: str, before: SSAMBAConfig, after: SSAMBAConfig) -> bool:
    """Whether ``key`` belongs to a head the overrides add, remove or resize.

    Such a head's weights in the file are set aside, and the model's copy starts from fresh
    initialisation; every other key must match exactly.
    """
    if key.startswith(_HEAD_PREFIXES["mlp_head"]):
        return before.num_classes != after.num_classes
    if key.startswith(_HEAD_PREFIXES["ssl"]):
        return before.ssl_heads != after.ssl_heads
    return False


def _describe(config: SSAMBAConfig) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in dataclasses.asdict(config).items() if k in ("embed_dim", "depth", "tokens")
    )
