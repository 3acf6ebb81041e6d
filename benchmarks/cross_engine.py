"""Keyword spotting on voices a model was never trained on: FRR at a ladder of false-accept budgets.

Runs each model once over each labelled stream (training/stream_builder.py; build them from an
engine left out of training, e.g. ``--engines rhvoice`` on the validation split), replays the
detector over a threshold sweep at the model's own smoothing, and prints, per stream and model, the
lowest FRR with at most 1, 2, 4, 8, 16 and 32 false accepts per hour, their mean (one figure that
is less coarse than any single point on a stream of an hour or two), and the 95% binomial half-width
of an FRR near it, so a difference between two models can be read against the stream's noise.

    python benchmarks/cross_engine.py --model stage7=ssamba_stream/assets/kws12/model.onnx \\
        --model new=runs/x/model.onnx --stream val_rhvoice_20db_120.wav [--json-out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ssamba_stream.evaluation import (
    DEFAULT_THRESHOLDS,
    Occurrence,
    StreamPosteriors,
    best_within,
    match_events,
    run_stream,
    sweep,
)
from ssamba_stream.kws import DetectorConfig

BUDGETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# The default sweep ends at 0.999; models on unseen voices reach <= 1 FA/h only above it.
THRESHOLDS = (*DEFAULT_THRESHOLDS, 0.9993, 0.9996, 0.9998, 0.9999)


def named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def score(model: Path, stream: Path) -> dict[str, object]:
    """One model pass over one stream: FRR at each budget, their mean, per-keyword misses at <= 2 FA/h."""
    run = run_stream(stream, stream.with_suffix(".csv"), model)
    return score_posteriors(run.posteriors, run.spotter.detector.config, run.keywords)


def score_posteriors(
    posteriors: StreamPosteriors, config: DetectorConfig, keywords: Sequence[Occurrence]
) -> dict[str, object]:
    """FRR at each budget over a threshold sweep at ``config``'s smoothing, their mean, the misses at 2 FA/h."""
    points = sweep(posteriors, config, keywords, thresholds=THRESHOLDS)
    best = {budget: best_within(points, budget) for budget in BUDGETS}
    frrs = [1.0 if p is None else p.frr for p in best.values()]
    at_two = best[2.0]
    misses: dict[str, str] = {}
    if at_two is not None:
        events = posteriors.events(replace(config, threshold=at_two.threshold, thresholds={}).checked())
        missed = Counter(o.label for o in match_events(events, keywords, 1.0).missed)
        spoken = Counter(o.label for o in keywords)
        misses = {label: f"{missed[label]}/{n}" for label, n in sorted(spoken.items())}
    mean = sum(frrs) / len(frrs)
    return {
        "keywords": len(keywords),
        "minutes": round(posteriors.seconds / 60, 1),
        "smoothing": config.smoothing_blocks,
        "frr": {f"{b:g}": None if p is None else round(p.frr, 4) for b, p in best.items()},
        "threshold": {f"{b:g}": None if p is None else p.threshold for b, p in best.items()},
        "mean_frr": round(mean, 4),
        "half_width_95": round(1.96 * math.sqrt(mean * (1 - mean) / len(keywords)), 4),
        "missed_at_2_fa_per_hour": misses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=named_path, action="append", required=True, help="NAME=PATH to .onnx")
    parser.add_argument(
        "--stream", type=Path, action="append", required=True, help="stream WAV (labels: .csv)"
    )
    parser.add_argument("--json-out", type=Path, help="also write every figure here")
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    print(f"| stream | model | FRR at <= {' / '.join(f'{b:g}' for b in BUDGETS)} FA/h | mean (+-95%) |")
    print("|---|---|---|---|")
    for stream in args.stream:
        for name, model in args.model:
            result = score(model, stream)
            results[f"{stream.name} {name}"] = result
            frr = " / ".join("-" if v is None else f"{100 * v:.1f}" for v in result["frr"].values())
            print(f"| {stream.stem} ({result['keywords']} kw, {result['minutes']:g} min) | {name} | {frr} | "
                  f"{100 * result['mean_frr']:.1f} (+-{100 * result['half_width_95']:.1f}) |", flush=True)  # fmt: skip
    for key, result in results.items():
        print(f"missed at <= 2 FA/h, {key}: "
              + ", ".join(f"{k} {v}" for k, v in result["missed_at_2_fa_per_hour"].items()))  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
