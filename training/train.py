"""Train or fine-tune an SSAMBA/SSAST model from a recipe: ``python training/train.py --recipe R.yaml [key=value ...]``.

Examples::

    python training/train.py --recipe training/recipes/kws-stream.yaml data.root=data/sc12 --out runs/kws
    python training/train.py --recipe training/recipes/kws-stream.yaml --out runs/kws --resume auto
    torchrun --nproc_per_node 4 training/train.py --recipe training/recipes/ssl-pretrain.yaml data.root=/audio
    python training/train.py --recipe training/recipes/esc50.yaml data.root=ESC-50 data.fold=all

User errors (recipe, override, data, checkpoint) are one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ssamba_stream.errors import UserError
from ssamba_stream.model.registry import CONFIGS
from ssamba_training.config import ESC50_FOLDS, Recipe, load_recipe
from ssamba_training.distributed import DistContext, init_distributed, shutdown
from ssamba_training.state import recipe_changes, resolve_resume
from ssamba_training.tasks import TASKS
from ssamba_training.trainer import DivergedError, Trainer


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are a one-line UserError instead of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="train.py",
        description=__doc__.split("\n\n")[0],
        epilog=f"tasks (recipe key 'task'): {', '.join(TASKS)}; models (model.name): {', '.join(CONFIGS)}",
    )
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (training/recipes/*.yaml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/<recipe name>)")
    p.add_argument("--resume", default=None, help="a checkpoint directory, or 'auto' = the newest in --out")
    p.add_argument(
        "--init-from", default=None, help="official SSAMBA .pth or checkpoint directory (= model.init_from)"
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=1e-3 epochs=2"
    )
    return p


def run_all_folds(recipe: Recipe, out: Path, resume: str | None, context: DistContext) -> dict[str, float]:
    """ESC-50 5-fold cross-validation: one run per held-out fold, then the mean accuracy."""
    accuracies = {}
    for fold in ESC50_FOLDS:
        fold_recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, fold=fold))
        metrics = Trainer(fold_recipe, out / f"fold-{fold}", context, resume).fit()
        accuracies[fold] = metrics[f"{recipe.eval.split}/accuracy"]
    summary = {"folds": accuracies, "mean_accuracy": sum(accuracies.values()) / len(accuracies)}
    if context.is_main:
        (out / "folds.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(
            f"5-fold accuracy {summary['mean_accuracy']:.4f} ("
            + ", ".join(f"fold {k} {v:.4f}" for k, v in accuracies.items())
            + ")"
        )
    return {"mean_accuracy": summary["mean_accuracy"]}


def check_resume(recipe: Recipe, out: Path, resume: str, is_main: bool) -> None:
    """Refuse to resume a run under settings that would silently change it (batch size, learning
    rate, data, model); say which harmless ones changed (epochs, ...), as recipe.yaml will."""
    checkpoint = resolve_resume(resume, out)
    if checkpoint is None:
        return
    allowed, breaking = recipe_changes(checkpoint, recipe.to_dict())
    if breaking:
        raise UserError(
            f"--resume {checkpoint}: the recipe differs from the run's ({'; '.join(breaking[:5])}): resume with the "
            "run's settings, or start a new run with another --out"
        )
    if allowed and is_main:
        print(f"resuming with changed settings: {'; '.join(allowed)} (recipe.yaml is updated)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2: user error, 1: diverged)."""
    context = None
    try:
        args = _parser().parse_intermixed_args(argv)
        recipe = load_recipe(args.recipe, list(args.overrides))
        if args.init_from:
            recipe.model.init_from = args.init_from
        out = args.out or Path("runs") / args.recipe.stem
        context = init_distributed(recipe.device)
        if args.resume:
            check_resume(recipe, out, args.resume, context.is_main)
        if recipe.data.kind == "esc50" and recipe.data.fold == "all":
            run_all_folds(recipe, out, args.resume, context)
        else:
            Trainer(recipe, out, context, args.resume).fit()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if context is not None:
            shutdown(context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
