"""The VAD gate's effect on FRR and FA/h: one model pass per stream, the sweep replayed without the
gate and at several look-backs (``--vad-hold``), and where the default setting's false accepts fell
(on words, or on nothing: noise and silence, the only ones a VAD can remove).

    python benchmarks/vad_gate.py /work/data/streams/test_reserved_20db.wav [--json-out vad.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ssamba_stream.cli_common import speech_gate
from ssamba_stream.evaluation import (
    NOTHING_SAID,
    best_within,
    false_accepts,
    operating_point,
    run_stream,
    sweep,
)

HOLDS = (None, 1.0, 1.5, 2.0)  # None: no gate
BUDGETS = (2.0, 8.0)


def score(stream: Path) -> list[dict[str, object]]:
    """Per look-back: the default point, the best FRR within each FA/h budget, false accepts by source."""
    gate = speech_gate(True, max(h for h in HOLDS if h), None, memory_seconds=None)
    run = run_stream(stream, stream.with_suffix(".csv"), None, vad=gate)
    config, hours = run.spotter.detector.config, run.posteriors.seconds / 3600
    rows = []
    for hold in HOLDS:
        if hold is not None:
            gate.hold_seconds = hold
        posteriors = replace(run.posteriors, gate=None if hold is None else gate)
        events = posteriors.events(config)
        default = operating_point(config.threshold, events, run.keywords, hours, 1.0)
        wrong = false_accepts(events, run.occurrences, run.keywords, 1.0)
        on_nothing = sum(fa.said == NOTHING_SAID for fa in wrong)
        points = sweep(posteriors, config, run.keywords)
        best = {}
        for budget in BUDGETS:
            point = best_within(points, budget)
            best[f"{budget:g}"] = None if point is None else point.to_json()
        rows.append({"hold": hold, "default": default.to_json(), "fa_on_nothing": on_nothing,
                     "fa_on_words": len(wrong) - on_nothing, "best": best})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("streams", nargs="+", type=Path)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    results = {}
    for stream in args.streams:
        results[stream.name] = score(stream)
        for row in results[stream.name]:
            d, best = row["default"], row["best"]
            budgets = ", ".join(
                f"<= {b} FA/h: " + ("n/a" if p is None else f"FRR {p['frr']:.1%} @ {p['threshold']}")
                for b, p in best.items()
            )
            hold = "no gate" if row["hold"] is None else f"hold {row['hold']:g} s"
            print(f"{stream.name} {hold}: default FRR {d['frr']:.1%}, {d['fa_per_hour']:.2f} FA/h "
                  f"({row['fa_on_nothing']} on nothing, {row['fa_on_words']} on words); {budgets}", flush=True)  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
