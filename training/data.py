"""Audio decoding and classification data sets that return fixed-length waveforms.

Features are computed on the batch (``KaldiFbank`` on the accelerator), so every data set here
yields raw 16 kHz waveforms of ``clip_samples`` samples plus a label index.

Bad files never stop a run, in the main process or in DataLoader workers: ``__getitem__``
returns a :class:`Skipped` record (path and reason) instead of raising, and
:func:`collate_skipping_bad` drops those from the batch and hands them over in ``Batch.skipped``
so that the trainer can feed them to a :class:`SkipReport` and print them at the end of the
epoch. A batch can therefore be smaller than ``batch_size``, or empty.

Randomness (crops, the 12-class sampling of unknown words and silence) comes from NumPy
generators seeded by ``(seed, ...)``, never from global state, so results do not depend on the
number of workers: per item from ``(seed, epoch, index)`` (call ``set_epoch`` before each epoch,
and do not use ``persistent_workers``, which would keep the workers' copy of the old epoch).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssamba_stream.audio import AUDIO_EXTENSIONS, BadAudioError, load_audio
from ssamba_stream.errors import UserError

from .augment import reverberate

SPLITS = ("train", "validation", "test")
KWS12_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
ROOM_STREAM = 11  # seeds RoomReverb's draws apart from the data sets' own
# Share of the 12-class silence items that are exact digital zeros rather than quiet noise.
SILENCE_ZERO_FRACTION = 0.1


def fit_length(audio: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Zero-pad at the end, or crop to ``length``: at a random start given ``rng``, else centred."""
    if audio.shape[0] < length:
        return np.pad(audio, (0, length - audio.shape[0]))
    excess = audio.shape[0] - length
    start = int(rng.integers(0, excess + 1)) if rng is not None else excess // 2
    return audio[start : start + length]


class Example(NamedTuple):
    """One good item: ``label`` is -1 for unlabelled audio."""

    waveform: Tensor
    label: int
    path: str


class Skipped(NamedTuple):
    """A file that could not be used, in place of an :class:`Example`."""

    path: str
    reason: str


class Batch(NamedTuple):
    """Collated good items, plus the bad ones that were dropped from this batch."""

    waveforms: Tensor  # (size, clip_samples) float32; (0, 0) when every item was bad
    labels: Tensor  # (size,) int64
    paths: list[str]
    skipped: list[Skipped]

    @property
    def size(self) -> int:
        return len(self.paths)


def collate_skipping_bad(items: Sequence[Example | Skipped]) -> Batch:
    """DataLoader ``collate_fn``: stack the good items, keep the bad ones as ``Batch.skipped``."""
    good = [item for item in items if isinstance(item, Example)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    if not good:
        return Batch(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), [], skipped)
    waveforms = torch.stack([item.waveform for item in good])
    labels = torch.tensor([item.label for item in good], dtype=torch.long)
    return Batch(waveforms, labels, [item.path for item in good], skipped)


class SkipReport:
    """Bad files seen during an epoch (each path once), for one summary line at its end."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}

    def add(self, skipped: Iterable[Skipped]) -> None:
        for item in skipped:
            self._reasons.setdefault(item.path, item.reason)

    def __len__(self) -> int:
        return len(self._reasons)

    @property
    def files(self) -> list[Skipped]:
        return [Skipped(path, reason) for path, reason in self._reasons.items()]

    def summary(self, max_listed: int = 20) -> str:
        """``"skipped N bad files: path (reason), ..."``, or ``""`` when nothing was skipped."""
        if not self._reasons:
            return ""
        listed = [f"{path} ({reason})" for path, reason in list(self._reasons.items())[:max_listed]]
        more = len(self._reasons) - len(listed)
        tail = f", and {more} more" if more > 0 else ""
        noun = "file" if len(self._reasons) == 1 else "files"
        return f"skipped {len(self._reasons)} bad {noun}: " + ", ".join(listed) + tail

    def clear(self) -> None:
        self._reasons.clear()


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _require_dir(root: str | os.PathLike, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{what} folder {root} does not exist")
    return root


def _default_clip(clip_samples: int | None, seconds: float, sample_rate: int) -> int:
    clip = int(round(seconds * sample_rate)) if clip_samples is None else int(clip_samples)
    if clip <= 0:
        raise UserError(f"clip_samples must be positive, got {clip}")
    return clip


class ClipDataset(Dataset):
    """Base of all data sets: (path, label) items decoded, resampled and fitted to one length.

    ``random_crop`` picks a random window of clips longer than ``clip_samples`` (training);
    otherwise the centre is kept (evaluation). Shorter clips are zero-padded at the end.
    """

    def __init__(
        self,
        items: list[tuple[str, int]],
        labels: list[str],
        sample_rate: int,
        clip_samples: int,
        random_crop: bool,
        seed: int,
    ) -> None:
        self.items = items
        self.labels = labels
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(clip_samples)
        self.random_crop = random_crop
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops: call before creating each epoch's DataLoader iterator."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _load(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Samples of item ``index`` at ``clip_samples`` length; raises BadAudioError."""
        audio = load_audio(self.items[index][0], self.sample_rate)
        return fit_length(audio, self.clip_samples, rng if self.random_crop else None)

    def __getitem__(self, index: int) -> Example | Skipped:
        path, label = self.items[index]
        try:
            audio = self._load(index, self._rng(index))
        except BadAudioError as error:
            return Skipped(error.path, error.problem)
        return Example(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), label, path)


class RoomReverb(Dataset):
    """A training set whose clips are played through simulated rooms, each with ``probability``.

    Wraps any data set of :class:`Example` items (after cropping), so every task meets reverberant
    speech without changing its own augmentation; the draws are seeded by (seed, epoch, index).
    """

    def __init__(
        self,
        dataset: Dataset,
        rirs: Sequence[np.ndarray],
        probability: float,
        level_db_range: tuple[float, float] = (-10.0, 0.0),
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.labels = dataset.labels
        self.rirs = [torch.as_tensor(r, dtype=torch.float32) for r in rirs]
        self.probability = float(probability)
        self.level_db_range = (float(level_db_range[0]), float(level_db_range[1]))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Example | Skipped:
        item = self.dataset[index]
        if isinstance(item, Skipped):
            return item
        state = np.random.SeedSequence([self.seed, self.epoch, index, ROOM_STREAM]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        wet = reverberate(
            item.waveform[None], self.rirs, self.probability, self.level_db_range, generator=generator
        )
        return item._replace(waveform=wet[0])


def _read_list(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as file:
        return {line.strip().replace("\\", "/") for line in file if line.strip()}


def _noise_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and _is_audio(path))


def _unknown_draw_probabilities(files: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """Per-file draw probabilities over the unknown words' ``files`` from per-word weights (a
    file's word is its folder; unlisted words weigh 1). A keyword is not among ``files``' words."""
    file_words = [f.split("/", 1)[0] for f in files]
    words = set(file_words)
    for word, weight in weights.items():
        if word not in words:
            raise UserError(f"unknown_word_weights names {word!r}, which is not an unknown word of this split "
                            f"(unknown words: {', '.join(sorted(words))})")  # fmt: skip
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
            raise UserError(f"unknown_word_weights[{word!r}] must be a number > 0, got {weight!r}")
    draw = np.array([float(weights.get(word, 1.0)) for word in file_words])
    return draw / draw.sum()


class SpeechCommands(ClipDataset):
    """Google Speech Commands v2: ``root/<word>/*.wav`` with ``validation_list.txt`` and
    ``testing_list.txt`` (train is every other file); ``_background_noise_`` is not a word.

    ``task="35"``: one class per word folder present (sorted). ``task="12"`` follows
    google-research kws_streaming: the ``keywords``, then ``_silence_``, then ``_unknown_``, in that
    label order (kws_streaming puts silence and unknown first; a head trained here is not
    interchangeable with theirs). As there, the unknown and silence counts are
    ``ceil(percentage / 100 * keyword items)``: unknown items are a seeded sample of the other
    words' files (``unknown_word_weights``: a word's files drawn that many times as likely as the
    others', for example the near misses of a keyword), silence items 1 s crops of the
    background-noise files at a gain uniform in ``[0, silence_max_gain)`` (exact zeros for a tenth
    of them), planned per split and seed.
    ``random_crop`` defaults to True for the train split only.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        task: str = "35",
        *,
        keywords: Sequence[str] = KWS12_KEYWORDS,
        unknown_percentage: float = 10.0,
        unknown_word_weights: Mapping[str, float] | None = None,
        silence_percentage: float = 10.0,
        silence_max_gain: float = 0.1,
        sample_rate: int = 16000,
        clip_samples: int | None = None,
        random_crop: bool | None = None,
        seed: int = 0,
    ) -> None:
        root = _require_dir(root, "Speech Commands")
        task = str(task)
        if split not in SPLITS:
            raise UserError(f"unknown Speech Commands split {split!r}: use one of {', '.join(SPLITS)}")
        if task not in ("35", "12"):
            raise UserError(
                f"unknown Speech Commands task {task!r}: use '35' (all words) or '12' (kws_streaming)"
            )
        lists = {}
        for name in ("validation_list.txt", "testing_list.txt"):
            if not (root / name).is_file():
                raise UserError(
                    f"{root} is not a Speech Commands v2 folder: {name} is missing "
                    "(expected <root>/<word>/<file>.wav, validation_list.txt and testing_list.txt)"
                )
            lists[name] = _read_list(root / name)
        words = self._word_files(root)
        if not words:
            raise UserError(f"{root} has no word folders with audio files: not a Speech Commands v2 folder")

        def in_split(relative: str) -> bool:
            if split == "validation":
                return relative in lists["validation_list.txt"]
            if split == "test":
                return relative in lists["testing_list.txt"]
            return relative not in lists["validation_list.txt"] and relative not in lists["testing_list.txt"]

        split_files = {word: [f for f in files if in_split(f)] for word, files in words.items()}
        self._silence: dict[int, tuple[str, float, float]] = {}  # item -> (noise file, start fraction, gain)
        if task == "35":
            labels = sorted(words)
            index = {word: i for i, word in enumerate(labels)}
            items = [(str(root / f), index[w]) for w, files in split_files.items() for f in files]
        else:
            labels = [*keywords, SILENCE_LABEL, UNKNOWN_LABEL]
            if len(set(labels)) != len(labels):
                raise UserError(f"keywords must be distinct words other than {SILENCE_LABEL}/{UNKNOWN_LABEL}")
            missing = [w for w in keywords if not split_files.get(w)]
            if missing:
                raise UserError(
                    f"keyword {', '.join(missing)} has no clips in the {split} split of {root}: check data.keywords "
                    f"(words with clips there: {', '.join(w for w, files in split_files.items() if files)})"
                )
            rng = np.random.default_rng([seed, SPLITS.index(split)])
            items = [(str(root / f), i) for i, w in enumerate(keywords) for f in split_files.get(w, [])]
            n_keyword = len(items)
            others = sorted(f for w, files in split_files.items() if w not in keywords for f in files)
            n_unknown = min(len(others), math.ceil(n_keyword * unknown_percentage / 100))
            draw = _unknown_draw_probabilities(others, unknown_word_weights) if unknown_word_weights else None
            chosen = (
                sorted(rng.choice(len(others), size=n_unknown, replace=False, p=draw)) if n_unknown else []
            )
            items += [(str(root / others[i]), labels.index(UNKNOWN_LABEL)) for i in chosen]
            n_silence = math.ceil(n_keyword * silence_percentage / 100)
            if n_silence:
                noise_dir = root / BACKGROUND_NOISE_DIR
                noises = _noise_files(noise_dir) if noise_dir.is_dir() else []
                if not noises:
                    raise UserError(
                        f"{root} has no {BACKGROUND_NOISE_DIR}/ audio files to make {SILENCE_LABEL} items "
                        "from: add them or set silence_percentage=0"
                    )
                picks = rng.integers(0, len(noises), size=n_silence)
                starts = rng.random(n_silence)
                gains = rng.random(n_silence) * silence_max_gain
                gains[rng.random(n_silence) < SILENCE_ZERO_FRACTION] = 0.0
                for pick, start, gain in zip(picks, starts, gains, strict=True):
                    self._silence[len(items)] = (str(noises[pick]), float(start), float(gain))
                    items.append((str(noises[pick]), labels.index(SILENCE_LABEL)))
        if not items:
            raise UserError(
                f"the {split} split of {root} is empty: check validation_list.txt/testing_list.txt"
            )
        self._noise_cache: dict[str, np.ndarray] = {}
        super().__init__(
            items,
            labels,
            sample_rate,
            _default_clip(clip_samples, 1.0, sample_rate),
            split == "train" if random_crop is None else random_crop,
            seed,
        )

    @staticmethod
    def _word_files(root: Path) -> dict[str, list[str]]:
        """Word -> its audio files relative to root (posix), for every non-empty word folder."""
        words = {}
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(("_", ".")):
                files = sorted(
                    f"{folder.name}/{f.name}" for f in folder.iterdir() if f.is_file() and _is_audio(f)
                )
                if files:
                    words[folder.name] = files
        return words

    def _load(self, index: int, rng: np.random.Generator) -> np.ndarray:
        if index not in self._silence:
            return super()._load(index, rng)
        path, start, gain = self._silence[index]
        if path not in self._noise_cache:
            self._noise_cache[path] = load_audio(path, self.sample_rate)
        noise = self._noise_cache[path]
        offset = int(start * max(noise.shape[0] - self.clip_samples, 0))
        return fit_length(noise[offset : offset + self.clip_samples], self.clip_samples) * np.float32(gain)


def background_noises(root: str | os.PathLike, sample_rate: int = 16000) -> list[np.ndarray]:
    """Decode every audio file of a noise folder (or of a Speech Commands root's ``_background_noise_``).

    Bad files are left out with a warning, as they are during training; no usable file at all
    is a :class:`UserError`.
    """
    folder = _require_dir(root, "background noise")
    if (folder / BACKGROUND_NOISE_DIR).is_dir():
        folder = folder / BACKGROUND_NOISE_DIR
    noises, bad = [], []
    for path in _noise_files(folder):
        try:
            noises.append(load_audio(path, sample_rate))
        except BadAudioError as error:
            bad.append(f"{error.path} ({error.problem})")
    if bad:
        warnings.warn(f"skipped {len(bad)} bad noise files: {', '.join(bad)}", stacklevel=2)
    if not noises:
        raise UserError(f"no usable audio files in background noise folder {folder}")
    return noises


class FolderDataset(ClipDataset):
    """One sub-folder per class (audio files of any supported extension); labels = sorted folder names."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        sample_rate: int = 16000,
        clip_samples: int | None = None,
        random_crop: bool = False,
        seed: int = 0,
    ) -> None:
        root = _require_dir(root, "data set")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = {f.name: sorted(p for p in f.rglob("*") if p.is_file() and _is_audio(p)) for f in folders}
        labels = [name for name, files in per_class.items() if files]
        items = [(str(path), index) for index, name in enumerate(labels) for path in per_class[name]]
        if not items:
            raise UserError(f"{root} has no class folders with audio files (expected <root>/<class>/<file>)")
        super().__init__(
            items, labels, sample_rate, _default_clip(clip_samples, 1.0, sample_rate), random_crop, seed
        )


class ManifestDataset(ClipDataset):
    """A CSV with header ``path,label`` (paths relative to the CSV's folder), for any classification task.

    Labels are the sorted distinct values unless ``labels`` fixes the list (and its order).
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        labels: Sequence[str] | None = None,
        *,
        sample_rate: int = 16000,
        clip_samples: int | None = None,
        random_crop: bool = False,
        seed: int = 0,
    ) -> None:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise UserError(f"manifest {csv_path} does not exist")
        with open(csv_path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if not {"path", "label"} <= set(reader.fieldnames or ()):
                raise UserError(f"manifest {csv_path} needs a header row with columns path,label")
            rows = []
            for row in reader:
                path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
                if not path or not label:
                    raise UserError(f"manifest {csv_path} line {reader.line_num}: empty path or label")
                rows.append((path, label))
        if not rows:
            raise UserError(f"manifest {csv_path} lists no files")
        label_list = sorted({label for _, label in rows}) if labels is None else list(labels)
        index = {label: i for i, label in enumerate(label_list)}
        unknown = sorted({label for _, label in rows} - set(index))
        if unknown:
            raise UserError(f"manifest {csv_path} has labels not in the label list: {', '.join(unknown)}")
        items = [(str(csv_path.parent / path), index[label]) for path, label in rows]
        super().__init__(
            items, label_list, sample_rate, _default_clip(clip_samples, 1.0, sample_rate), random_crop, seed
        )


class ESC50(ClipDataset):
    """ESC-50 (``root/meta/esc50.csv``, ``root/audio/``): 5 s clips, labels ordered by ``target``.

    ``folds`` selects the rows, for 5-fold cross-validation: train on four folds, evaluate on the fifth.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        folds: Sequence[int] = (1, 2, 3, 4),
        *,
        sample_rate: int = 16000,
        clip_samples: int | None = None,
        random_crop: bool = False,
        seed: int = 0,
    ) -> None:
        root = _require_dir(root, "ESC-50")
        meta = root / "meta" / "esc50.csv"
        if not meta.is_file():
            raise UserError(f"{root} is not an ESC-50 folder: meta/esc50.csv is missing")
        with open(meta, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if not {"filename", "fold", "target", "category"} <= set(reader.fieldnames or ()):
                raise UserError(f"{meta} needs the columns filename, fold, target, category")
            try:
                rows = [(r["filename"], int(r["fold"]), int(r["target"]), r["category"]) for r in reader]
            except ValueError as error:
                raise UserError(f"{meta} has a non-integer fold or target ({error})") from None
        categories = {target: category for _, _, target, category in rows}
        if sorted(categories) != list(range(len(categories))):
            raise UserError(f"{meta}: targets must number the categories 0..{len(categories) - 1}")
        present = sorted({fold for _, fold, _, _ in rows})
        folds = sorted({int(fold) for fold in folds})
        if not folds or not set(folds) <= set(present):
            raise UserError(
                f"ESC-50 folds {folds} are not a non-empty subset of the folds present, {present}"
            )
        labels = [categories[target] for target in range(len(categories))]
        items = [
            (str(root / "audio" / name), target) for name, fold, target, _ in sorted(rows) if fold in folds
        ]
        super().__init__(
            items, labels, sample_rate, _default_clip(clip_samples, 5.0, sample_rate), random_crop, seed
        )


class UnlabelledAudio(ClipDataset):
    """Every audio file under ``root`` (recursive), as random ``clip_samples`` crops for pretraining.

    A file contributes ``max(1, round(duration / clip))`` items per epoch, each an independent
    random crop (so long recordings are seen about once per epoch, in overlapping windows);
    shorter files are zero-padded. Only the cropped span is decoded. Labels are empty and every
    item's label is -1.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        clip_samples: int,
        *,
        sample_rate: int = 16000,
        seed: int = 0,
    ) -> None:
        root = _require_dir(root, "audio")
        files = sorted(p for p in root.rglob("*") if p.is_file() and _is_audio(p))
        if not files:
            raise UserError(f"no audio files under {root}")
        clip = _default_clip(clip_samples, 0.0, sample_rate)
        self.durations: list[float] = []
        self._file_of_item: list[int] = []
        for number, path in enumerate(files):
            try:
                info = sf.info(str(path))
                seconds = info.frames / info.samplerate
            except (sf.SoundFileError, OSError):
                seconds = 0.0  # still one item: loading it reports the problem as a skip
            self.durations.append(seconds)
            self._file_of_item += [number] * max(1, round(seconds * sample_rate / clip))
        items = [(str(files[number]), -1) for number in self._file_of_item]
        super().__init__(items, [], sample_rate, clip, True, seed)

    def _load(self, index: int, rng: np.random.Generator) -> np.ndarray:
        seconds = self.durations[self._file_of_item[index]]
        clip_seconds = self.clip_samples / self.sample_rate
        offset = float(rng.uniform(0.0, max(seconds - clip_seconds, 0.0)))
        audio = load_audio(self.items[index][0], self.sample_rate, offset=offset, duration=clip_seconds)
        return fit_length(audio[: self.clip_samples], self.clip_samples)
