"""The training loop shared by every task: steps, logging, evaluation, checkpoints, resume, DDP.

Reproducibility is by construction: the batch order comes from (seed, epoch), augmentations from a
generator seeded by (seed, epoch, batch, rank), crops from (seed, epoch, item), and the global
generators (stochastic depth) are saved in every checkpoint. A run resumed from a checkpoint
therefore replays exactly the steps the interrupted run would have taken (on CPU, bit for bit).
Step order: optimiser step, then metric row, evaluation and checkpoint when due; after each epoch
the bad-file report, evaluation (unless ``eval.every_steps`` is set) and a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from ssamba_stream.model.registry import CONFIGS

from .config import Recipe
from .data import Batch, Skipped, SkipReport, collate_skipping_bad
from .distributed import (
    DistContext,
    all_gather_objects,
    all_gather_tensor,
    all_reduce_sum,
    any_rank,
    replica_digests,
    wrap_model,
)
from .evaluation import Evaluation
from .metrics import MetricsLog
from .model_init import build_recipe_model, describe_model, initialise_from
from .optim import LRSchedule, build_optimizer
from .progress import EpochProgress, bar_enabled, say
from .report import write_report
from .rng import capture, derive_seed, restore, seed_everything
from .rng import generator as make_generator
from .sampling import EpochShuffleSampler, ShardSampler
from .splits import build_splits
from .state import (
    Progress,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    save_model_dir,
)
from .tasks import build_task

EVAL_SEED = 7  # evaluation masks (SSL) are the same at every evaluation


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: reported in one line, exit status 1."""


@dataclass
class _Window:
    """Sums over the steps since the last metric row (this rank's)."""

    started: float = field(default_factory=time.perf_counter)
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, out: dict[str, torch.Tensor], loss: float) -> None:
        count = float(out["count"])
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss * count
        for name, value in out.items():
            if name != "loss":
                self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def running(self, name: str) -> float | None:
        return self.sums[name] / max(self.sums["count"], 1.0) if name in self.sums else None


def _configure_determinism(recipe: Recipe) -> None:
    if recipe.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _target_length(recipe: Recipe) -> int:
    return int(
        recipe.model.overrides.get("target_length", CONFIGS[recipe.model.name].get("target_length", 1024))
    )


class Trainer:
    """One training run of ``recipe`` into ``out`` (resumed from ``resume``: a path, ``auto`` or None)."""

    def __init__(self, recipe: Recipe, out: Path, context: DistContext, resume: str | None = None) -> None:
        self.recipe, self.out, self.ctx = recipe, Path(out), context
        self.main = context.is_main
        checkpoint = (
            resolve_resume(resume, self.out) if resume else None
        )  # user errors before any global state
        self.splits = build_splits(recipe, _target_length(recipe))
        _configure_determinism(recipe)
        seed_everything(recipe.seed)
        self.model = build_recipe_model(recipe, self.splits.labels)
        if recipe.model.init_from:
            say(self.main, initialise_from(self.model, recipe.model.init_from).summary())
        self.model.to(context.device)
        say(self.main, describe_model(self.model))
        self.task = build_task(recipe, self.model, context.device, self.splits)
        self.optimizer = build_optimizer(
            self.model, recipe.optim, self.task.auxiliary, self.task.auxiliary_lr_scale
        )
        self.sampler = EpochShuffleSampler(
            len(self.splits.train), recipe.seed, context.rank, context.world_size
        )
        self.batches_per_epoch = math.ceil(self.sampler.per_rank / recipe.data.batch_size)
        self.schedule = LRSchedule(recipe.schedule, recipe.optim.lr, self._total_steps())
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.progress = Progress()
        self._last_eval: tuple[int | None, Evaluation | None] = (None, None)
        if checkpoint is not None:
            self._resume(checkpoint)
        else:
            if resume == "auto":
                say(self.main, f"no checkpoint in {self.out / 'checkpoints'}: starting a new run")
            seed_everything(derive_seed(recipe.seed, context.rank))  # per-rank stochastic depth
        self.objective = wrap_model(self.task.objective, context)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        self.metrics = MetricsLog(self.out, self.main, self.progress.step if checkpoint is not None else None)

    # ------------------------------------------------------------------ setup
    def _amp_dtype(self) -> torch.dtype | None:
        if self.recipe.amp == "none":
            return None
        if self.ctx.device.type != "cuda":
            say(
                self.main,
                f"amp={self.recipe.amp} applies on CUDA only: training in float32 on {self.ctx.device}",
            )
            return None
        return torch.bfloat16 if self.recipe.amp == "bf16" else torch.float16

    def _resume(self, checkpoint: Path) -> None:
        restored = load_checkpoint(checkpoint, self.model, self.optimizer, self.ctx.rank, self.ctx.world_size,
                                   self.task.auxiliary)  # fmt: skip
        self.progress = restored.progress
        self.schedule.load_state_dict(self.progress.extra["schedule"])
        if self.scaler is not None and "scaler" in self.progress.extra:
            self.scaler.load_state_dict(self.progress.extra["scaler"])
        if restored.rng_states is not None:
            restore(restored.rng_states)
        else:  # another world size: no state saved for this rank
            seed_everything(derive_seed(self.recipe.seed, self.ctx.rank, self.progress.step))
        p = self.progress
        say(
            self.main,
            f"resumed from {checkpoint}: epoch {p.epoch + 1}, {p.batches_done} batches done, step {p.step}",
        )

    def _loader(self, dataset: Dataset, batch_size: int, sampler: torch.utils.data.Sampler) -> DataLoader:
        # An own generator: creating the iterator must not draw from the global one (exact resume).
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.recipe.data.num_workers,
            collate_fn=collate_skipping_bad,
            generator=torch.Generator(),
            pin_memory=self.ctx.device.type == "cuda",
        )

    def _total_steps(self) -> int:
        """The run's length in optimiser steps: ``max_steps`` or the recipe's epochs."""
        whole = self.recipe.epochs * self.batches_per_epoch
        return whole if self.recipe.max_steps is None else min(whole, self.recipe.max_steps)

    # ------------------------------------------------------------------ loop
    def _done(self) -> bool:
        limit = self.recipe.max_steps
        return limit is not None and self.progress.step >= limit

    def fit(self) -> dict[str, float]:
        """Train to the end of the recipe; returns the final metrics (validation, test)."""
        while self.progress.epoch < self.recipe.epochs and not self._done():
            self._train_epoch()
        return self._finish()

    def _train_epoch(self) -> None:
        recipe, p = self.recipe, self.progress
        epoch = p.epoch
        self.splits.train.set_epoch(epoch)
        self.sampler.set_position(epoch, p.batches_done, recipe.data.batch_size)
        loader = self._loader(self.splits.train, recipe.data.batch_size, self.sampler)
        bar = EpochProgress(
            self.main, f"epoch {epoch + 1}/{recipe.epochs}", self.batches_per_epoch, p.batches_done
        )
        skips, window = SkipReport(), _Window()
        self.model.train()
        try:
            for batch in loader:
                batch_index = p.batches_done
                p.batches_done += 1
                skips.add(batch.skipped)
                empty = any_rank(batch.size == 0, self.ctx) if self.ctx.distributed else batch.size == 0
                if empty:  # every rank skips the step together, or DDP would wait forever
                    continue
                self._step(batch, epoch, batch_index, window)
                bar.update(batch.size, window.running("loss"), window.running("accuracy"))
                if p.step % recipe.log_every == 0:
                    self._log_train(window)
                    window = _Window()
                if recipe.eval.every_steps and p.step % recipe.eval.every_steps == 0:
                    self._evaluate()
                if p.step % recipe.checkpoint.every_steps == 0:
                    self._checkpoint()
                if self._done():
                    break
        finally:
            bar.close()
        self._report_skips(epoch, skips)
        if self._done() and p.batches_done < self.batches_per_epoch:
            return
        if not recipe.eval.every_steps:
            self._evaluate()
        p.epoch, p.batches_done = epoch + 1, 0
        self._checkpoint()

    def _step(self, batch: Batch, epoch: int, batch_index: int, window: _Window) -> None:
        recipe, p = self.recipe, self.progress
        lr = self.schedule.apply(self.optimizer, p.step, epoch)
        generator = make_generator(derive_seed(recipe.seed, epoch, batch_index, self.ctx.rank))
        inputs = self.task.prepare(batch, generator, derive_seed(recipe.seed, epoch, batch_index))
        autocast = (torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())  # fmt: skip
        with autocast:
            out = self.objective(**inputs)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()):
            raise DivergedError(
                f"the loss is {float(loss)} at step {p.step} (epoch {epoch + 1}): lower optim.lr or set optim.grad_clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if recipe.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        p.step += 1
        window.add({k: v.detach() for k, v in out.items()}, loss.item())
        window.sums["lr"] = lr

    # ------------------------------------------------------------------ reporting
    def _log_train(self, window: _Window) -> None:
        names = sorted(k for k in window.sums if k != "lr")
        totals = all_reduce_sum(
            torch.tensor([window.sums[n] for n in names], dtype=torch.float64), self.ctx
        ).tolist()
        sums = dict(zip(names, totals, strict=True))
        count = max(sums.pop("count"), 1.0)
        values = {f"train/{name}": value / count for name, value in sums.items()}
        values["train/lr"] = window.sums["lr"]
        values["train/clips_per_s"] = count / max(time.perf_counter() - window.started, 1e-9)
        p = self.progress
        self.metrics.log(p.step, p.epoch, values)
        if not bar_enabled():
            shown = " ".join(f"{k.removeprefix('train/')} {v:.4g}" for k, v in values.items())
            say(
                self.main,
                f"epoch {p.epoch + 1} batch {p.batches_done}/{self.batches_per_epoch} step {p.step}: {shown}",
            )

    def _report_skips(self, epoch: int, skips: SkipReport) -> None:
        merged = SkipReport()
        for files in all_gather_objects([tuple(s) for s in skips.files], self.ctx):
            merged.add(Skipped(*item) for item in files)
        summary = merged.summary() or "no bad files skipped"
        say(self.main, f"epoch {epoch + 1}: {summary}")
        self.metrics.log(self.progress.step, epoch, {"train/skipped_files": float(len(merged))})

    def _evaluate(self, split: str | None = None) -> Evaluation | None:
        """Evaluate ``split`` (default: the recipe's), log it, write its reports, track best/."""
        split = split or self.recipe.eval.split
        dataset = getattr(self.splits, split)
        if dataset is None:
            return None
        size = self.recipe.data.eval_batch_size or self.recipe.data.batch_size
        limit = self.task.eval_items(size)
        loader = self._loader(
            dataset, size, ShardSampler(len(dataset), self.ctx.rank, self.ctx.world_size, limit)
        )
        self.model.eval()
        result = self.task.evaluate(loader, derive_seed(self.recipe.seed, EVAL_SEED, self.ctx.rank), self.ctx)
        self.model.train()
        p = self.progress
        self.metrics.log(
            p.step, p.epoch, {f"{split}/{name}": value for name, value in result.metrics.items()}
        )
        say(
            self.main,
            f"{split} at step {p.step}: "
            + " ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())),
        )
        if self.main:
            for suffix, confusion in result.confusions.items():
                write_report(
                    self.out / "eval" / f"{split}{suffix}",
                    confusion,
                    self.splits.labels,
                    f"{split}{suffix} step {p.step}",
                )
        if split == self.recipe.eval.split:
            self._track_best(result.metrics[self.task.main_metric])
            self._last_eval = (p.step, result)
        return result

    def _track_best(self, metric: float) -> None:
        p = self.progress
        self.schedule.observe(metric)
        if p.best_metric is None or metric > p.best_metric:
            p.best_metric, p.best_step = metric, p.step
            if self.main:
                meta = {
                    "best": {
                        "metric": f"{self.recipe.eval.split}/{self.task.main_metric}",
                        "value": metric,
                        "step": p.step,
                    }
                }
                save_model_dir(self.out / "best", self.model, meta)

    def _checkpoint(self) -> None:
        states = capture()
        gathered = {name: all_gather_tensor(value, self.ctx) for name, value in states.items()}
        per_rank = [
            {name: tensors[rank] for name, tensors in gathered.items()} for rank in range(self.ctx.world_size)
        ]
        if not self.main:
            return
        p = self.progress
        p.extra = {"schedule": self.schedule.state_dict()}
        if self.scaler is not None:
            p.extra["scaler"] = self.scaler.state_dict()
        save_checkpoint(self.out, self.model, self.optimizer, p, per_rank, self.recipe.checkpoint.keep,
                        {"recipe": self.recipe.to_dict(), "epoch": p.epoch, "step": p.step},
                        self.task.auxiliary)  # fmt: skip

    def _finish(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for split in dict.fromkeys([self.recipe.eval.split, "test"]):
            if split == "test" and self.splits.test is self.splits.validation:
                continue  # ESC-50: the held-out fold is both
            last_step, last = self._last_eval
            result = (
                last
                if split == self.recipe.eval.split and last_step == self.progress.step
                else self._evaluate(split)
            )
            if result is not None:
                metrics.update({f"{split}/{name}": value for name, value in result.metrics.items()})
        digests = replica_digests(self.model, self.ctx)
        p = self.progress
        if self.main:
            meta = {"recipe": self.recipe.to_dict(), "epoch": p.epoch, "step": p.step, "metrics": metrics,
                    "best": {"metric": p.best_metric, "step": p.best_step}, "replica_sha256": digests}  # fmt: skip
            final = save_model_dir(self.out / "final", self.model, meta)
            kept = list_checkpoints(self.out)
            say(True, f"final model in {final}" + (f"; last checkpoint {kept[-1]}" if kept else ""))
        self.metrics.close()
        return metrics
