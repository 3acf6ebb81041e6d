"""Average the weights of checkpoints of one architecture (checkpoint averaging, a "model soup").

Runs fine-tuned from one start usually lie in one basin, where the average of their weights is a
model of its own, often steadier off the training distribution than any one of them (Izmailov et
al. 2018, SWA; Wortsman et al. 2022, model soups; Cha et al. 2021, SWAD). Pass the step
checkpoints of one run, or the best of several runs from one start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ssamba_stream.errors import CheckpointError, UserError
from ssamba_stream.model.checkpoint import load_model, save_model


def average_states(states: Sequence[dict[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """The weighted mean of float tensors; other tensors (counters, indices) must agree and are kept."""
    if len(states) != len(weights) or not states:
        raise UserError(
            f"{len(states)} checkpoint(s) but {len(weights)} weight(s): give one weight per checkpoint"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"weights {list(weights)} must be non-negative with a positive sum")
    total = float(sum(weights))
    averaged: dict[str, Tensor] = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float64)
            for state, weight in zip(states, weights, strict=True):
                acc += state[key].to(torch.float64) * (weight / total)
            averaged[key] = acc.to(first.dtype)
        elif all(torch.equal(state[key], first) for state in states[1:]):
            averaged[key] = first.clone()
        else:
            raise CheckpointError(
                f"{key!r} is not a float tensor and differs between checkpoints: cannot average it"
            )
    return averaged


def average_checkpoints(sources: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> Path:
    """Average ``sources`` (model checkpoint directories of one config) into ``out``, atomically."""
    if len(sources) < 2:
        raise UserError("give at least two checkpoints to average")
    weights = list(weights) if weights is not None else [1.0] * len(sources)
    models = [load_model(source) for source in sources]
    reference = models[0].config.to_dict()
    for source, model in zip(sources[1:], models[1:], strict=True):
        if model.config.to_dict() != reference:
            differing = sorted(k for k, v in model.config.to_dict().items() if reference.get(k) != v)
            raise CheckpointError(
                f"{source} has another model config ({', '.join(differing)}): average one architecture"
            )
    state = average_states([model.state_dict() for model in models], weights)
    models[0].load_state_dict(state)
    metadata = {"averaged_from": [str(source) for source in sources], "weights": weights}
    return save_model(models[0], out, metadata)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssamba_training.average",
        description="Average the weights of model checkpoints of one architecture into a new checkpoint.",
    )
    parser.add_argument(
        "sources", type=Path, nargs="+", help="checkpoint directories (config.json + model.safetensors)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the averaged checkpoint")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per source (default: equal)")
    args = parser.parse_args(argv)
    try:
        out = average_checkpoints(args.sources, args.out, args.weights)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote the average of {len(args.sources)} checkpoints to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
