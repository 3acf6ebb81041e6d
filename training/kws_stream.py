"""Streaming keyword spotting (recipe ``task: kws-stream``) for frame-token models such as ``ssamba-kws``.

Training prepares the model for the stream it will see: each clip is time-shifted, mixed with
background noise, and preceded by random past audio (other clips or noise, whole tokens), so that
it is classified mid-stream; only the clip's own tokens are pooled (mean from its first token)
before the classifier. The backward scan's block size is fixed or drawn per batch from
``stream.train_blocks`` (dynamic-chunk training: one model serves several latencies); the draw
depends on the batch alone, so every DDP rank uses the same. Evaluation classifies whole clips
offline for every block size in ``stream.eval_blocks`` (None = full backward); ``accuracy`` is the
one at the model's configured (deployment) block size.

With ``stream.row_clips`` > 0 training is continuous instead (``stream_rows``): the batch's clips
are laid out in rows of stream, noise is set against the words, and the head is trained at every
block end exactly as it runs deployed (mean of the last W tokens), on per-block targets. The
evaluation stays the offline clip accuracy; the stream measures (FRR at FA/h) come from
``ssamba-stream evaluate`` on an exported model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from ssamba_stream.model.base import SpectrogramModel
from ssamba_stream.model.streaming import block_samples, head_inputs, stream_frames

from .augment import mix_background, prepend_past_audio, time_shift
from .config import Recipe, RecipeError
from .data import SILENCE_LABEL, UNKNOWN_LABEL, Batch, ClipDataset, RoomReverb
from .distributed import DistContext
from .engine_adversary import CLIPS_TABLE, EngineAdversary, clip_engines
from .evaluation import Evaluation, classification_pass
from .splits import Splits
from .stream_rows import IGNORE, LabelRoles, Rows, block_targets, block_words, build_rows
from .task import Task
from .teacher import clip_key, load_embeddings

SAMPLE_RATE = 16000


def block_suffix(block: int | None) -> str:
    return "_full" if block is None else f"_B{block}"


class StreamObjective(nn.Module):
    """DDP-wrappable forward: features of [past | clip] rows -> mean over the clip's tokens -> CE loss."""

    def __init__(self, model: SpectrogramModel) -> None:
        super().__init__()
        self.model = model
        self.deploy_block = model.config.backward_block

    def forward(
        self, fbank: Tensor, clip_start: Tensor, labels: Tensor, block: int | None
    ) -> dict[str, Tensor]:
        hidden = self.model.forward_features(fbank, mode=self.model.scan_mode(block))
        inside = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] >= clip_start[:, None]).to(
            hidden.dtype
        )
        pooled = (hidden * inside[..., None]).sum(dim=1) / inside.sum(dim=1, keepdim=True).clamp_min(1.0)
        logits = self.model.classify(pooled).float()
        count = torch.tensor(float(fbank.shape[0]), device=fbank.device)
        correct = (logits.argmax(dim=-1) == labels).float().sum()
        return {"loss": F.cross_entropy(logits, labels), "count": count, "accuracy": correct}


class ContinuousObjective(nn.Module):
    """DDP-wrappable forward: fbank of stream rows -> the head at every block end -> masked CE loss."""

    def __init__(
        self, model: SpectrogramModel, distill_weight: float = 0.0, adversary: EngineAdversary | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.deploy_block = model.config.backward_block
        self.distill_weight = distill_weight
        self.adversary = adversary

    def forward(
        self,
        fbank: Tensor,
        targets: Tensor,
        block: int,
        scan: str = "auto",
        distill_at: Tensor | None = None,
        distill_to: Tensor | None = None,
        adversary_at: Tensor | None = None,
        adversary_engines: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``distill_at`` (k, 2) row and block of head inputs to compare with the teacher's
        embeddings ``distill_to`` (k, E) of the words they hold; ``adversary_at`` (j, 2) those whose
        word's engine (``adversary_engines``, j indices) the engine adversary names."""
        hidden = self.model.forward_features(fbank, mode=self.model.scan_mode(block, scan))
        pooled = head_inputs(self.model, hidden, block)
        logits = self.model.classify(pooled).float()
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        scored = targets != IGNORE
        count = scored.sum().float()
        correct = ((logits.argmax(dim=-1) == targets) & scored).float().sum()
        loss = (
            F.cross_entropy(logits, targets, ignore_index=IGNORE)
            if bool(scored.any())
            else logits.sum() * 0.0
        )
        out = {"loss": loss, "count": count, "accuracy": correct}
        if distill_at is not None and distill_to is not None:
            student = pooled[distill_at[:, 0], distill_at[:, 1]].float()
            mismatch = similarity_mismatch(student, distill_to)
            out["loss"] = loss + self.distill_weight * mismatch
            out["distill"] = mismatch.detach() * count
        if self.adversary is not None and adversary_at is not None and adversary_engines is not None:
            engine_loss, named = self.adversary(
                pooled[adversary_at[:, 0], adversary_at[:, 1]], adversary_engines
            )
            out["loss"] = out["loss"] + engine_loss
            out["engine_loss"], out["engine_accuracy"] = engine_loss.detach() * count, named * count
        return out


def similarity_mismatch(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference of the two (k, k) cosine-similarity matrices of centred features.

    Relational distillation: the student keeps its own width and basis and needs no projection
    head; it only has to find the same words alike and different words apart as the teacher does.
    """
    if student.shape[0] < 2:
        return student.sum() * 0.0

    def similarities(x: Tensor) -> Tensor:
        x = F.normalize(x - x.mean(dim=0, keepdim=True), dim=-1)
        return x @ x.T

    return (similarities(student) - similarities(teacher.to(student))).square().mean()


class KwsStreamTask(Task):
    """Streaming-KWS training with past audio, noise, shifts, SpecAugment and block-size draws."""

    name = "kws-stream"
    main_metric = "accuracy"

    def __init__(self, recipe: Recipe, model: SpectrogramModel, device: torch.device, splits: Splits) -> None:
        try:
            model.check_streamable()
            roles = (
                LabelRoles.from_labels(splits.labels, UNKNOWN_LABEL, SILENCE_LABEL)
                if recipe.stream.row_clips
                else None
            )
        except (AttributeError, ValueError) as exc:
            raise RecipeError(f"task kws-stream: {exc}") from None
        super().__init__(recipe, model, device, splits)
        self.roles = roles
        self.teacher = load_embeddings(recipe.distill.teacher) if recipe.distill.teacher else None
        if self.teacher is not None:
            self._check_teacher_covers(splits.train)
        self.engine_of: dict[str, int] = {}  # clip key -> engine index, for the engine adversary
        if recipe.adversary.weight > 0:
            self.auxiliary, self.engine_of = self._engine_adversary(splits.train)
            self.auxiliary_lr_scale = recipe.adversary.lr_scale
        self.objective = (
            ContinuousObjective(model, recipe.distill.weight, self.auxiliary)
            if self.roles
            else StreamObjective(model)
        )
        self.noises = [torch.as_tensor(n, dtype=torch.float32) for n in splits.noises]
        self.deploy_block = self.objective.deploy_block

    def prepare(self, batch: Batch, generator: torch.Generator, batch_seed: int) -> dict[str, Tensor]:
        if self.roles is not None:
            return self._prepare_rows(batch, generator, batch_seed)
        aug, blocks = self.recipe.augment, self.recipe.stream.train_blocks
        waveforms = self.other_voice(batch.waveforms.to(self.device), generator)
        if aug.time_shift_ms > 0:
            waveforms = time_shift(waveforms, int(aug.time_shift_ms * SAMPLE_RATE / 1000), generator)
        if aug.background_probability > 0 and self.noises:
            waveforms = mix_background(waveforms, self.noises, tuple(aug.background_snr_db),
                                       aug.background_probability, generator=generator)  # fmt: skip
        rows, clip_start = prepend_past_audio(waveforms, aug.past_seconds, noises=self.noises or None,
                                              noise_probability=aug.past_noise_probability, generator=generator)  # fmt: skip
        fbank = self.augment_features(self.frontend(rows), generator)
        block = blocks[batch_seed % len(blocks)]
        return {
            "fbank": fbank,
            "clip_start": clip_start,
            "labels": batch.labels.to(self.device),
            "block": block,
        }

    def _prepare_rows(self, batch: Batch, generator: torch.Generator, batch_seed: int) -> dict[str, Tensor]:
        aug, stream = self.recipe.augment, self.recipe.stream
        block = stream.train_blocks[batch_seed % len(stream.train_blocks)] or self.deploy_block
        step_samples = block_samples(self.model, block)
        rows = build_rows(self.other_voice(batch.waveforms.to(self.device), generator), batch.labels, stream.row_clips, tuple(stream.row_gap_seconds),
                          self.roles, multiple_of=step_samples, generator=generator)  # fmt: skip
        audio = rows.audio
        if aug.background_probability > 0 and self.noises:
            audio = mix_background(audio, self.noises, tuple(aug.background_snr_db), aug.background_probability,
                                   signal_power=rows.word_power, generator=generator)  # fmt: skip
        fbank = self.augment_features(stream_frames(self.model, audio, self.frontend, block), generator)
        blocks = audio.shape[1] // step_samples
        targets = block_targets(
            rows.words, audio.shape[0], blocks, block, self.model.config.head_window, self.roles
        )
        inputs = {"fbank": fbank, "targets": targets.to(self.device), "block": block}
        if self.teacher is not None or self.engine_of:
            at, keys = self._held_words(rows, batch.paths, blocks, block)
            if self.teacher is not None:
                inputs.update(self._teacher_inputs(at, keys))
            if self.engine_of:
                inputs.update(self._adversary_inputs(at, keys))
        return inputs

    def _engine_adversary(self, train: Dataset) -> tuple[EngineAdversary, dict[str, int]]:
        """The engine classifier over the engines of the training clips (``synth_clips.csv``), and
        each listed training clip's engine index."""
        try:
            engine_by_key = clip_engines(self.recipe.data.root)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
        keys = {key for key, label in _clip_items(train) if label != SILENCE_LABEL}
        engines = tuple(sorted({engine_by_key[k] for k in keys if k in engine_by_key}))
        if len(engines) < 2:
            raise RecipeError(
                f"adversary needs training words from two engines or more; {CLIPS_TABLE} of "
                f"{self.recipe.data.root} gives {len(engines)} for this training split"
            )
        engine_of = {k: engines.index(engine_by_key[k]) for k in keys if k in engine_by_key}
        section = self.recipe.adversary
        adversary = EngineAdversary(self.model.config.embed_dim, engines, section.hidden, section.weight)
        return adversary.to(self.device), engine_of

    def _check_teacher_covers(self, train: Dataset) -> None:
        """At start-up, not hours into the run: every word clip of the training set has an embedding."""
        missing = [
            key for key, label in _clip_items(train) if label != SILENCE_LABEL and key not in self.teacher
        ]
        if missing:
            raise RecipeError(self._no_embedding(missing[0], len(missing)))

    def _no_embedding(self, key: str, count: int = 1) -> str:
        clips = f"clip {key} has" if count == 1 else f"{count} training clips (the first: {key}) have"
        return (
            f"{clips} no teacher embedding in {self.recipe.distill.teacher}: "
            "make them for this data set with python -m ssamba_training.teacher"
        )

    def _held_words(self, rows: Rows, paths: list[str], blocks: int, block: int) -> tuple[Tensor, list[str]]:
        """(row, block) of each head input that holds one whole word, and that word's clip key."""
        held = block_words(rows.words, rows.audio.shape[0], blocks, block, self.model.config.head_window)
        at = torch.nonzero(held >= 0)
        return at, [clip_key(paths[int(rows.sources[i])]) for i in held[at[:, 0], at[:, 1]].tolist()]

    def _teacher_inputs(self, at: Tensor, keys: list[str]) -> dict[str, Tensor]:
        """The teacher's embedding of each held word's clip."""
        assert self.teacher is not None
        missing = next((k for k in keys if k not in self.teacher), None)
        if missing is not None:  # a batch from outside the checked training set
            raise RecipeError(self._no_embedding(missing))
        to = torch.from_numpy(np.stack([self.teacher[k] for k in keys])) if keys else torch.zeros(0, 1)
        return {"distill_at": at.to(self.device), "distill_to": to.to(self.device)}

    def _adversary_inputs(self, at: Tensor, keys: list[str]) -> dict[str, Tensor]:
        """The held words whose engine is known (a clip missing from the table is left out)."""
        known = [i for i, key in enumerate(keys) if key in self.engine_of]
        engines = torch.tensor([self.engine_of[keys[i]] for i in known], dtype=torch.long)
        return {"adversary_at": at[known].to(self.device), "adversary_engines": engines.to(self.device)}

    def _at_block(self, block: int | None) -> Callable[[Tensor], Tensor]:
        mode = self.model.scan_mode(block)
        return lambda fbank: self.model(fbank, mode=mode)

    def evaluate(self, batches: Iterable[Batch], seed: int, context: DistContext) -> Evaluation:
        blocks = dict.fromkeys([*self.recipe.stream.eval_blocks, self.deploy_block])
        heads = {block_suffix(block): self._at_block(block) for block in blocks}
        result = classification_pass(
            batches, lambda w: self.frontend(w.to(self.device)), heads, self.model.config.num_classes, context
        )
        deploy = block_suffix(self.deploy_block)
        result.metrics.update(
            accuracy=result.metrics[f"accuracy{deploy}"], loss=result.metrics[f"loss{deploy}"]
        )
        return result


def _clip_items(dataset: Dataset) -> list[tuple[str, str]]:
    """(clip key, label) of every item of a training set, through its wrappers (rooms, a labelled
    fraction, saved negatives)."""
    if isinstance(dataset, ClipDataset):
        return [(clip_key(path), dataset.labels[label]) for path, label in dataset.items]
    if isinstance(dataset, Subset):
        inner = _clip_items(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [item for part in dataset.datasets for item in _clip_items(part)]
    if isinstance(dataset, RoomReverb):
        return _clip_items(dataset.dataset)
    return []  # a data set of other items: the batches are checked as they come
