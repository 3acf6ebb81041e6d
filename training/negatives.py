"""``data.negatives``: the clips that ``--save-activations DIR`` kept, fed back as ``_unknown_``
training items, so that a model learns to stay quiet on its own false accepts.

The saver writes each event's audio (the seconds up to the event's stream time) as a WAV directly
in ``DIR``, with a line in ``DIR/activations.jsonl``. Every audio file directly in a folder is one
negative and sub-folders are not read: after listening, moving the true detections into
``DIR/true/`` (or deleting them) leaves only the false accepts. An item is the ``clip_samples``
of audio that end where the event fired, the audio the head had just heard, zero-padded at the
start when the stream was shorter; files at another rate are resampled. Only the training split
gets them: validation and test stay comparable across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from ssamba_stream.audio import load_audio
from ssamba_stream.errors import UserError

from .data import UNKNOWN_LABEL, ClipDataset, _is_audio


class SavedActivations(ClipDataset):
    """The saved clips of ``folders`` as ``_unknown_`` items of ``labels``, each ``repeat`` times
    per epoch (an oversampling factor: a few dozen false accepts among thousands of clips)."""

    def __init__(
        self,
        folders: Sequence[str],
        labels: Sequence[str],
        *,
        repeat: int = 1,
        sample_rate: int = 16000,
        clip_samples: int = 16000,
        seed: int = 0,
    ) -> None:
        if UNKNOWN_LABEL not in labels:
            raise UserError(f"data.negatives adds {UNKNOWN_LABEL} items, and the labels {list(labels)} have no "
                            f"{UNKNOWN_LABEL}: train the 12-class task (data.task=12) or add that class")  # fmt: skip
        files = [path for folder in folders for path in activation_files(folder)]
        unknown = labels.index(UNKNOWN_LABEL)
        items = [(str(path), unknown) for path in files for _ in range(repeat)]
        super().__init__(items, list(labels), sample_rate, clip_samples, False, seed)

    def _load(self, index: int, rng: np.random.Generator) -> np.ndarray:
        audio = load_audio(self.items[index][0], self.sample_rate)[-self.clip_samples :]
        return np.pad(audio, (self.clip_samples - audio.shape[0], 0))


def activation_files(folder: str) -> list[Path]:
    """The audio files directly in ``folder`` (sorted); a missing or empty folder is a UserError."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(
            f"data.negatives folder {root} does not exist: give a folder that --save-activations wrote"
        )
    files = sorted(path for path in root.iterdir() if path.is_file() and _is_audio(path))
    if not files:
        raise UserError(f"data.negatives folder {root} has no activation WAVs directly in it "
                        "(sub-folders are not read): save some with --save-activations or drop the folder")  # fmt: skip
    return files


class WithNegatives(ConcatDataset):
    """A training set followed by its :class:`SavedActivations`, drawn as one data set."""

    def __init__(self, train: Dataset, negatives: SavedActivations) -> None:
        super().__init__([train, negatives])
        self.labels = negatives.labels

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)
