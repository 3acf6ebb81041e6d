"""Training checkpoints: everything needed to resume a run exactly, in safetensors + JSON, never pickle.

``OUT/checkpoints/step-XXXXXXX/`` holds

- ``model.safetensors`` + ``config.json``: the model in ``save_model``'s format (``load_model`` reads it);
- ``optimizer.safetensors`` (per-parameter state tensors as ``state.<index>.<name>``) + ``optimizer.json``
  (param groups and any non-tensor state);
- ``rng.safetensors``: every rank's global generator states as ``rank<r>.<name>`` (uint8 torch state, ...);
- ``trainer.json``: epoch, step, batches done in the epoch, schedule, grad-scaler and best-metric state;
- ``auxiliary.safetensors``: the task's trainable modules outside the model (an adversary), if any.

Each directory is written atomically (temp dir + fsync + rename), so a kill leaves either the
complete checkpoint or none; the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from ssamba_stream.errors import CheckpointError
from ssamba_stream.formats import CONFIG_FILE, WEIGHTS_FILE
from ssamba_stream.model.checkpoint import (
    load_state_strict,
    model_files,
    tensors_to_bytes,
    write_directory_atomically,
)

CHECKPOINTS_DIR = "checkpoints"
STEP_PREFIX = "step-"
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
RNG_TENSORS, TRAINER_JSON = "rng.safetensors", "trainer.json"
AUXILIARY_TENSORS = "auxiliary.safetensors"


@dataclass
class Progress:
    """Where training stands: ``batches_done`` batches of ``epoch`` (0-based) are done."""

    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # schedule, grad scaler


def _json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()


def _optimizer_files(optimizer: torch.optim.Optimizer) -> dict[str, bytes]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                plain.setdefault(str(index), {})[name] = value
    document = {"param_groups": state["param_groups"], "plain_state": plain}
    return {OPTIMIZER_TENSORS: tensors_to_bytes(tensors), OPTIMIZER_JSON: _json_bytes(document)}


def _load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    document = json.loads((directory / OPTIMIZER_JSON).read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(directory / OPTIMIZER_TENSORS)).items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in document["plain_state"].items():
        state.setdefault(int(index), {}).update(entries)
    # JSON has no tuples: give values back the type the optimizer uses (betas).
    groups = [
        {k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in saved.items()}
        for saved, current in zip(document["param_groups"], optimizer.param_groups, strict=True)
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def step_dir(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS_DIR / f"{STEP_PREFIX}{step:07d}"


def save_checkpoint(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    rng_states: list[dict[str, Tensor]],
    keep: int,
    metadata: dict | None = None,
    auxiliary: nn.Module | None = None,
) -> Path:
    """Write ``OUT/checkpoints/step-XXXXXXX/`` atomically and drop all but the newest ``keep``."""
    rng = {
        f"rank{rank}.{name}": value
        for rank, states in enumerate(rng_states)
        for name, value in states.items()
    }
    trainer = {"epoch": progress.epoch, "step": progress.step, "batches_done": progress.batches_done,
               "best_metric": progress.best_metric, "best_step": progress.best_step,
               "world_size": len(rng_states), **progress.extra}  # fmt: skip
    files = {
        **model_files(model, metadata),
        **_optimizer_files(optimizer),
        RNG_TENSORS: tensors_to_bytes(rng),
        TRAINER_JSON: _json_bytes(trainer),
    }
    if auxiliary is not None:
        files[AUXILIARY_TENSORS] = tensors_to_bytes(auxiliary.state_dict())
    target = write_directory_atomically(step_dir(out, progress.step), files)
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(out: Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary directories are not listed)."""
    folder = Path(out) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / TRAINER_JSON).is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def resolve_resume(resume: str, out: Path) -> Path | None:
    """The checkpoint ``--resume`` names: a directory, or ``auto`` = the newest in ``out`` (None if none)."""
    if resume == "auto":
        found = list_checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / TRAINER_JSON).is_file():
        raise CheckpointError(
            f"--resume {path}: not a training checkpoint (no {TRAINER_JSON}); use a step-* directory or 'auto'"
        )
    return path


RESUMABLE_CHANGES = (
    "epochs",
    "max_steps",
    "log_every",
    "device",
    "data.root",
    "model.init_from",
    "checkpoint.",
)


def recipe_changes(checkpoint: Path, recipe: dict[str, Any]) -> tuple[list[str], list[str]]:
    """How ``recipe`` differs from the one the checkpoint's run was started with, as
    ``key old -> new`` lines: (changes a resumed run can take, changes that break it)."""
    try:
        saved = json.loads((checkpoint / CONFIG_FILE).read_text()).get("metadata", {}).get("recipe")
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot resume from {checkpoint}: {exc}") from None
    if saved is None:
        return [], []
    old, new = _flatten(saved), _flatten(recipe)
    allowed, breaking = [], []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            line = f"{key} {old.get(key)!r} -> {new.get(key)!r}"
            (allowed if key.startswith(RESUMABLE_CHANGES) else breaking).append(line)
    return allowed, breaking


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class Restored:
    progress: Progress
    rng_states: dict[str, Tensor] | None  # this rank's global generator states, when saved for it


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank: int,
    world_size: int,
    auxiliary: nn.Module | None = None,
) -> Restored:
    """Load weights and optimizer state into the given objects; return the progress and this rank's RNG."""
    try:
        trainer = json.loads((directory / TRAINER_JSON).read_text())
        state = load_file(str(directory / WEIGHTS_FILE))
        load_state_strict(model, state, source=str(directory / WEIGHTS_FILE))
        _load_optimizer(optimizer, directory)
        if auxiliary is not None:
            path = directory / AUXILIARY_TENSORS
            load_state_strict(auxiliary, load_file(str(path)), source=str(path))
        rng = load_file(str(directory / RNG_TENSORS))
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {directory}: {exc}") from None
    prefix = f"rank{rank}."
    mine = {k.removeprefix(prefix): v for k, v in rng.items() if k.startswith(prefix)}
    same_world = trainer.pop("world_size", 1) == world_size
    known = ("epoch", "step", "batches_done", "best_metric", "best_step")
    progress = Progress(**{k: trainer.pop(k) for k in known}, extra=trainer)
    return Restored(progress, mine if mine and same_world else None)


def save_model_dir(directory: Path, model: nn.Module, metadata: dict | None = None) -> Path:
    """A model-only checkpoint (``best/``, ``final/``), atomically."""
    return write_directory_atomically(directory, model_files(model, metadata))
