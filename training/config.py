"""Recipes: YAML files of training settings, checked against typed sections, plus dotted overrides.

A recipe is a nested mapping whose sections are the dataclasses below; every key is checked
against them (type and name), so a typo fails at once with one line naming the key instead of
being silently ignored. ``extends: other.yaml`` (relative to the recipe) starts from another
recipe. The ``model`` section takes ``name`` and ``init_from`` plus any field of the named model
config (e.g. ``depth``), checked against that config's types. Command-line overrides are
``section.key=value`` with YAML values (``optim.lr=1e-3``, ``stream.train_blocks=[2,4,8]``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ssamba_stream.errors import UserError
from ssamba_stream.model.registry import CONFIGS, architecture

DATA_KINDS = ("speechcommands", "esc50", "manifest", "folder", "unlabelled")
ESC50_FOLDS = (1, 2, 3, 4, 5)
_BOOL = "tag:yaml.org,2002:bool"


class _RecipeLoader(yaml.SafeLoader):
    """YAML with only true/false as booleans (YAML 1.2): ``keywords: [yes, no, on, off]`` are words."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)


class RecipeError(UserError):
    """A recipe or override that does not fit the schema: reported in one line, exit status 2."""


@dataclass
class ModelSection:
    """Which model: a named config (``CONFIGS``) with field overrides, optionally initialised from weights."""

    name: str = "ssamba-kws"
    init_from: str | None = None  # official SSAMBA .pth or one of our checkpoint directories
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. depth


@dataclass
class DataSection:
    kind: str = "speechcommands"
    root: str | None = None  # data set folder (Speech Commands, ESC-50, class folders, unlabelled audio)
    task: str = "35"  # Speech Commands: "35" words or kws_streaming's "12"
    keywords: list[str] | None = None  # 12-class task: the keywords (default: the ten of kws_streaming)
    unknown_percentage: float = 10.0
    unknown_word_weights: dict[str, float] | None = None  # 12-class task: draw these unknown words more often
    silence_percentage: float = 10.0
    negatives: list[str] = field(default_factory=list)  # --save-activations folders, trained as _unknown_
    negatives_repeat: int = 1  # times each of those clips is drawn per epoch
    fold: int | str = 1  # ESC-50 held-out fold, or "all" for 5-fold cross-validation
    train_manifest: str | None = None  # manifest kind: CSV path,label files
    val_manifest: str | None = None
    test_manifest: str | None = None
    val_root: str | None = None  # folder kind: validation class folders; unlabelled: held-out audio
    test_root: str | None = None
    clip_seconds: float | None = None  # default: 1 s (Speech Commands, manifests, folders), 5 s (ESC-50)
    background: str | None = None  # noise folder for mixing; "auto" = the Speech Commands root's
    batch_size: int = 128
    eval_batch_size: int | None = None  # default: batch_size
    num_workers: int = 2
    label_fraction: float = (
        1.0  # share of the training split's labelled items kept, per class (few-label runs)
    )


@dataclass
class OptimSection:
    name: str = "adam"  # adam | adamw
    lr: float = 2.5e-4
    weight_decay: float = 5e-7
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    eps: float = 1e-8
    grad_clip: float | None = None  # max global gradient norm
    head_lr_scale: float = 1.0  # SSAST's head_lr: the classifier head's lr multiple
    pool_lr_scale: float = (
        1.0  # the attention head's scorer: new, from zero, when a mean-pooled model is fine-tuned
    )


@dataclass
class ScheduleSection:
    kind: str = (
        "multistep"  # multistep (by epoch) | plateau (on the validation metric) | cosine (to 0) | constant
    )
    warmup_steps: int = 1000  # linear warm-up from 0 (SSAST: 1000 steps); 0 = none
    start_epoch: int = 5  # multistep: the lr is multiplied by gamma after this many epochs ...
    step_epochs: int = 1  # ... and again every step_epochs epochs after that
    gamma: float = 0.85
    patience: int = 2  # plateau: evaluations without improvement before the lr is cut
    factor: float = 0.5


@dataclass
class AugmentSection:
    freqm: int = 0  # SpecAugment frequency-mask width parameter (mel bins); 0 = off
    timem: int = 0  # SpecAugment time-mask width parameter (frames); 0 = off
    mixup: float = 0.0  # probability that an example is mixed (SSAST's mixup rate)
    mixup_alpha: float = 10.0  # Beta(alpha, alpha) of the mixing weight
    noise: bool = False  # SSAST's feature noise and time roll
    time_shift_ms: float = 0.0  # waveform shift in [-x, x] ms
    background_probability: float = 0.0  # share of clips mixed with background noise
    background_snr_db: list[float] = field(default_factory=lambda: [0.0, 20.0])
    past_seconds: float = 0.0  # kws-stream: up to this much past audio before each clip
    past_noise_probability: float = 0.5  # share of past audio taken from the noises, not other clips
    rir_probability: float = 0.0  # share of training clips played through a simulated room (0 = off)
    rir_level_db: list[float] = field(default_factory=lambda: [-10.0, 0.0])  # far-field level change of those
    rir_bank: str | None = (
        None  # room_impulses.npz (python -m ssamba_training.synth --rirs N); None: data.root's
    )
    speed: list[float] = field(default_factory=lambda: [1.0, 1.0])  # speed perturbation factors; [1, 1] = off
    mel_warp: float = 0.0  # VTLP: frequencies scaled by 1 +- this per example (0 = off)
    colour_db: float = 0.0  # random smooth equaliser of up to about this many dB (0 = off)


@dataclass
class SSLSection:
    mask_count: int = 400  # masked tokens per clip (SSAST: 400 of 512 patches)
    cluster: bool | None = None  # None: cluster masking for patch tokens, random for frame tokens
    mse_weight: float = 10.0  # loss = nce + mse_weight * mse (SSAST's joint objective)
    eval_batches: int = 20  # batches of validation audio per SSL evaluation


@dataclass
class StreamSection:
    train_blocks: list[int | None] = field(default_factory=lambda: [8])  # one drawn per batch
    eval_blocks: list[int | None] = field(default_factory=lambda: [None, 8])  # None = full backward
    row_clips: int = 0  # kws-stream: > 0 trains on rows of this many clips, a target per block (stream_rows)
    row_gap_seconds: list[float] = field(
        default_factory=lambda: [0.1, 1.0]
    )  # silence before each clip in a row


@dataclass
class DistillSection:
    teacher: str | None = None  # teacher embeddings (.npz, python -m ssamba_training.teacher); None = off
    weight: float = 10.0  # loss = ce + weight * (student vs teacher similarity mismatch)


@dataclass
class AdversarySection:
    weight: float = 0.0  # > 0: an engine classifier whose gradient reaches the encoder reversed, times this
    hidden: int = 256  # the engine classifier's hidden width
    lr_scale: float = 1.0  # the classifier's learning rate, times the model's


@dataclass
class EvalSection:
    every_steps: int = 0  # 0 = after every epoch
    split: str = "validation"  # the split that picks best/ and drives the plateau schedule


@dataclass
class CheckpointSection:
    every_steps: int = 1000  # also written after every epoch
    keep: int = 3  # newest step checkpoints kept (best/ is kept apart)


@dataclass
class Recipe:
    task: str = "classify"
    loss: str = "ce"  # classify: ce | bce (SSAST's Speech Commands recipe uses BCE)
    seed: int = 0
    epochs: int = 30
    max_steps: int | None = None  # stop early after this many optimiser steps
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    deterministic: bool = True
    log_every: int = 50  # optimiser steps between metric rows
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    ssl: SSLSection = field(default_factory=SSLSection)
    stream: StreamSection = field(default_factory=StreamSection)
    distill: DistillSection = field(default_factory=DistillSection)
    adversary: AdversarySection = field(default_factory=AdversarySection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested mapping in the recipe file's layout (model overrides inline)."""
        data = dataclasses.asdict(self)
        model = data.pop("model")
        data["model"] = {"name": model["name"], "init_from": model["init_from"], **model["overrides"]}
        return data


# ------------------------------------------------------------------------------------ type checks
def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as ``annotation`` (int, float, str, bool, None, unions, lists, dicts), else RecipeError."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, key)
            except RecipeError:
                continue
        raise RecipeError(f"recipe key {key!r} must be {_describe(annotation)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"recipe key {key!r} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_coerce(v, item, key) for v in value]
    if origin is dict and typing.get_args(annotation):
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key {key!r} must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation)
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is dict or annotation is Any:
        return value
    if annotation is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    raise RecipeError(f"recipe key {key!r} must be {_describe(annotation)}, got {value!r}")


def _build_section(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe section {prefix!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise RecipeError(f"unknown recipe key '{prefix}.{key}' ({prefix} has: {', '.join(names)})")
        values[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**values)


def _build_model_section(raw: Any) -> ModelSection:
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe section 'model' must be a mapping, got {raw!r}")
    raw = dict(raw)
    name = _coerce(raw.pop("name", ModelSection.name), str, "model.name")
    init_from = _coerce(raw.pop("init_from", None), str | None, "model.init_from")
    if name not in CONFIGS:
        raise RecipeError(f"unknown model.name {name!r}: choose one of {', '.join(sorted(CONFIGS))}")
    config_cls = architecture(CONFIGS[name].get("arch", "ssamba"))[0]
    hints = typing.get_type_hints(config_cls)
    fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in ("name", "arch")]
    overrides = {}
    for key, value in raw.items():
        if key not in fields:
            raise RecipeError(f"unknown recipe key 'model.{key}' (a {name} config has: {', '.join(fields)})")
        overrides[key] = _coerce(value, hints[key], f"model.{key}")
    return ModelSection(name=name, init_from=init_from, overrides=overrides)


def _check_choices(recipe: Recipe) -> None:
    from .tasks import TASKS  # here, not at the top: every task module imports this one

    checks = [
        ("task", recipe.task, tuple(TASKS)),
        ("loss", recipe.loss, ("ce", "bce")),
        ("device", recipe.device, ("auto", "cpu", "cuda")),
        ("amp", recipe.amp, ("none", "bf16", "fp16")),
        ("data.kind", recipe.data.kind, DATA_KINDS),
        ("optim.name", recipe.optim.name, ("adam", "adamw")),
        ("schedule.kind", recipe.schedule.kind, ("multistep", "plateau", "cosine", "constant")),
        ("eval.split", recipe.eval.split, ("validation", "test")),
    ]
    for key, value, choices in checks:
        if value not in choices:
            raise RecipeError(f"recipe key {key!r} must be one of {', '.join(choices)}, got {value!r}")
    if recipe.data.fold != "all" and recipe.data.fold not in ESC50_FOLDS:
        raise RecipeError(f"recipe key 'data.fold' must be 1..5 or 'all', got {recipe.data.fold!r}")
    positive = {"epochs": recipe.epochs, "data.batch_size": recipe.data.batch_size, "log_every": recipe.log_every,
                "checkpoint.every_steps": recipe.checkpoint.every_steps, "checkpoint.keep": recipe.checkpoint.keep,
                "ssl.mask_count": recipe.ssl.mask_count, "data.negatives_repeat": recipe.data.negatives_repeat}  # fmt: skip
    for key, value in positive.items():
        if value < 1:
            raise RecipeError(f"recipe key {key!r} must be >= 1, got {value}")
    if not 0.0 < recipe.data.label_fraction <= 1.0:
        raise RecipeError(
            f"recipe key 'data.label_fraction' must be in (0, 1], got {recipe.data.label_fraction}"
        )
    if recipe.data.label_fraction < 1.0 and recipe.data.kind == "unlabelled":
        raise RecipeError(
            "data.label_fraction needs labelled data: unlabelled audio has no labels to thin out"
        )
    if (
        len(recipe.optim.betas) != 2
        or len(recipe.augment.background_snr_db) != 2
        or len(recipe.augment.rir_level_db) != 2
        or len(recipe.augment.speed) != 2
    ):
        raise RecipeError(
            "optim.betas, augment.background_snr_db, augment.rir_level_db and augment.speed take two numbers each"
        )
    if not 0.5 <= recipe.augment.speed[0] <= recipe.augment.speed[1] <= 2.0:
        raise RecipeError(
            f"augment.speed must be [low, high] with 0.5 <= low <= high <= 2, got {recipe.augment.speed}"
        )
    if not 0.0 <= recipe.augment.mel_warp < 0.5 or recipe.augment.colour_db < 0:
        raise RecipeError("augment.mel_warp must be in [0, 0.5) and augment.colour_db >= 0 "
                          f"(got {recipe.augment.mel_warp} and {recipe.augment.colour_db})")  # fmt: skip
    if not 0.0 <= recipe.augment.rir_probability <= 1.0:
        raise RecipeError(
            f"augment.rir_probability must be between 0 and 1, got {recipe.augment.rir_probability}"
        )
    for key, blocks in (
        ("stream.train_blocks", recipe.stream.train_blocks),
        ("stream.eval_blocks", recipe.stream.eval_blocks),
    ):
        if not blocks or any(b is not None and b < 1 for b in blocks):
            raise RecipeError(f"recipe key {key!r} must list block sizes >= 1 (or null for full backward)")
    gaps = recipe.stream.row_gap_seconds
    if recipe.stream.row_clips < 0 or len(gaps) != 2 or not 0.0 <= gaps[0] <= gaps[1]:
        raise RecipeError(
            "stream.row_clips must be >= 0 and stream.row_gap_seconds two seconds [low, high], 0 <= low <= high"
        )
    if recipe.distill.teacher is not None and (recipe.task != "kws-stream" or not recipe.stream.row_clips):
        raise RecipeError("distill.teacher works with task kws-stream on rows: set stream.row_clips > 0")
    if recipe.distill.weight < 0:
        raise RecipeError(f"distill.weight must be >= 0, got {recipe.distill.weight}")
    if recipe.adversary.weight < 0 or recipe.adversary.hidden < 1 or recipe.adversary.lr_scale <= 0:
        raise RecipeError("adversary.weight must be >= 0, adversary.hidden >= 1 and adversary.lr_scale > 0 (got "
                          f"{recipe.adversary.weight}, {recipe.adversary.hidden}, {recipe.adversary.lr_scale})")  # fmt: skip
    if recipe.adversary.weight > 0 and (recipe.task != "kws-stream" or not recipe.stream.row_clips):
        raise RecipeError("adversary works with task kws-stream on rows: set stream.row_clips > 0")


def build_recipe(raw: dict[str, Any]) -> Recipe:
    """A checked :class:`Recipe` from a nested mapping (as read from YAML, overrides applied)."""
    sections = {f.name: f for f in dataclasses.fields(Recipe)}
    hints = typing.get_type_hints(Recipe)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in sections:
            raise RecipeError(f"unknown recipe key {key!r} (a recipe has: {', '.join(sections)})")
        if key == "model":
            values[key] = _build_model_section(value)
        elif dataclasses.is_dataclass(hints[key]):
            values[key] = _build_section(hints[key], value, key)
        else:
            values[key] = _coerce(value, hints[key], key)
    recipe = Recipe(**values)
    _check_choices(recipe)
    return recipe


# ------------------------------------------------------------------------------------ files, overrides
def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def read_recipe_file(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a recipe file, with its ``extends`` chain merged underneath."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    if path.resolve() in _seen:
        raise RecipeError(f"recipe {path} extends itself through {' -> '.join(str(p) for p in _seen)}")
    try:
        raw = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of settings")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return _merge(read_recipe_file(path.parent / str(parent), (*_seen, path.resolve())), raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``raw`` with ``section.key=value`` overrides set (values parsed as YAML, checked later)."""
    raw = _merge({}, raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
        try:
            value = _load_yaml(text) if text.strip() else None
        except yaml.YAMLError:
            raise RecipeError(f"override {item!r}: the value is not valid YAML") from None
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[leaf] = value
    return raw


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read, merge, override and check a recipe file."""
    return build_recipe(apply_overrides(read_recipe_file(path), overrides or []))
