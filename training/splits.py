"""The data sets a recipe names: train/validation/test splits, labels and background noises."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from .config import ESC50_FOLDS, Recipe, RecipeError
from .data import (
    BACKGROUND_NOISE_DIR,
    ESC50,
    KWS12_KEYWORDS,
    ClipDataset,
    FolderDataset,
    ManifestDataset,
    RoomReverb,
    SpeechCommands,
    UnlabelledAudio,
    background_noises,
)
from .negatives import SavedActivations, WithNegatives
from .synth.rooms import RIR_FILE, load_bank

SAMPLE_RATE = 16000
LABEL_FRACTION_STREAM = 7  # seeds the label-fraction draw apart from the data sets' own draws


class LabelledFraction(Subset):
    """A seeded share of each class of a training set, for few-label fine-tuning (SSL's claim is
    that pretraining helps most when labels are scarce). Every class keeps at least one item."""

    def __init__(self, dataset: ClipDataset, fraction: float, seed: int) -> None:
        classes = np.array([label for _, label in dataset.items])
        rng = np.random.default_rng([seed, LABEL_FRACTION_STREAM])
        kept: list[int] = []
        for label in np.unique(classes):
            members = np.flatnonzero(classes == label)
            kept += rng.choice(members, size=max(1, round(fraction * len(members))), replace=False).tolist()
        super().__init__(dataset, sorted(kept))
        self.labels = dataset.labels

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


@dataclass
class Splits:
    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    labels: list[str]
    noises: list[np.ndarray] = field(default_factory=list)


def _require(value: str | None, key: str) -> str:
    if not value:
        raise RecipeError(f"recipe key {key!r} is not set: pass {key}=/path/to/it")
    return value


def _clip(seconds: float | None, default: float) -> int:
    return int(round((default if seconds is None else seconds) * SAMPLE_RATE))


def _frames_to_samples(frames: int) -> int:
    """Samples of a 25 ms / 10 ms fbank with ``frames`` frames."""
    return (frames - 1) * SAMPLE_RATE // 100 + SAMPLE_RATE * 25 // 1000


def build_splits(recipe: Recipe, target_length: int) -> Splits:
    """Instantiate the recipe's data sets (``target_length``: model frames, the default SSL crop)."""
    data, seed = recipe.data, recipe.seed
    root = data.root
    if data.kind == "speechcommands":
        root = _require(root, "data.root")
        common = dict(task=data.task, keywords=tuple(data.keywords or KWS12_KEYWORDS), seed=seed,
                      unknown_percentage=data.unknown_percentage, silence_percentage=data.silence_percentage,
                      clip_samples=_clip(data.clip_seconds, 1.0))  # fmt: skip
        # the weights shape what training meets; validation and test keep the plain draw, comparable across runs
        train = SpeechCommands(root, "train", unknown_word_weights=data.unknown_word_weights, **common)
        val, test = (SpeechCommands(root, split, **common) for split in ("validation", "test"))
    elif data.kind == "esc50":
        root = _require(root, "data.root")
        if data.fold == "all":
            raise RecipeError("data.fold=all runs one training per fold: start it through train.py")
        clip = _clip(data.clip_seconds, 5.0)
        train = ESC50(
            root, [f for f in ESC50_FOLDS if f != data.fold], clip_samples=clip, random_crop=True, seed=seed
        )
        val = test = ESC50(root, [data.fold], clip_samples=clip, seed=seed)
    elif data.kind == "manifest":
        clip = _clip(data.clip_seconds, 1.0)
        train = ManifestDataset(_require(data.train_manifest, "data.train_manifest"), clip_samples=clip,
                                random_crop=True, seed=seed)  # fmt: skip
        val, test = (ManifestDataset(path, train.labels, clip_samples=clip, seed=seed) if path else None
                     for path in (data.val_manifest, data.test_manifest))  # fmt: skip
    elif data.kind == "folder":
        clip = _clip(data.clip_seconds, 1.0)
        train = FolderDataset(_require(root, "data.root"), clip_samples=clip, random_crop=True, seed=seed)
        val, test = (FolderDataset(path, clip_samples=clip, seed=seed) if path else None
                     for path in (data.val_root, data.test_root))  # fmt: skip
        for split in (val, test):
            if split is not None and split.labels != train.labels:
                raise RecipeError(
                    f"data.val_root/test_root classes {split.labels} differ from data.root's {train.labels}"
                )
    else:  # unlabelled audio for self-supervised pretraining
        clip = _clip(data.clip_seconds, 0.0) or _frames_to_samples(target_length)
        train = UnlabelledAudio(_require(root, "data.root"), clip, seed=seed)
        val = UnlabelledAudio(data.val_root or root, clip, seed=seed + 1)  # fixed crops: never set_epoch'd
        test = None
    clip = train.clip_samples
    if data.label_fraction < 1.0:
        train = LabelledFraction(train, data.label_fraction, seed)
    if data.negatives:  # after the label fraction: the user's sorted false accepts are all kept
        negatives = SavedActivations(data.negatives, train.labels, repeat=data.negatives_repeat,
                                     sample_rate=SAMPLE_RATE, clip_samples=clip, seed=seed)  # fmt: skip
        train = WithNegatives(train, negatives)
    aug = recipe.augment
    if aug.rir_probability > 0:
        train = RoomReverb(
            train, _rooms(aug.rir_bank, root), aug.rir_probability, tuple(aug.rir_level_db), seed
        )
    return Splits(train, val, test, list(train.labels), _noises(data.background, root, data.kind))


def _rooms(bank: str | None, root: str | None) -> list[np.ndarray]:
    path = Path(bank) if bank else Path(str(root)) / RIR_FILE
    if not path.is_file():
        raise RecipeError(f"augment.rir_probability needs room impulse responses: {path} is missing "
                          "(build them with python -m ssamba_training.synth ... --rirs 200, or set augment.rir_bank)")  # fmt: skip
    return load_bank(path)


def _noises(background: str | None, root: str | None, kind: str) -> list[np.ndarray]:
    if background is None:
        return []
    if background == "auto":
        if kind != "speechcommands" or not (Path(str(root)) / BACKGROUND_NOISE_DIR).is_dir():
            raise RecipeError(
                "data.background=auto needs a Speech Commands root with _background_noise_/: give a folder"
            )
        return background_noises(str(root), SAMPLE_RATE)
    return background_noises(background, SAMPLE_RATE)
