"""FRR at <= 1 FA/h of a keyword model against the noise level of the stream, tuned and tested per SNR.

One figure per stream hides what dominates a spotter's errors: the noise under the words. For
each SNR this builds (or reuses) a validation stream and a test stream with training/
stream_builder.py (the model's keywords among unknown words; the same words at every SNR, only
the noise gain differs), runs the model once over each, tunes the detector (threshold,
smoothing) on the validation stream at <= ``--max-fa-per-hour`` and scores the test stream three
ways, side by side: at the model's shipped defaults, at the defaults tuned on validation at that
SNR (what a user who tunes for their noise gets), and at the test stream's own best threshold
(in-sample, an upper bound). Validation and test voices are disjoint, as in every stream figure.

    python benchmarks/kws_snr.py --data data/sc12 [--model M.onnx] [--snr-db inf,20,10]
        [--tune-minutes 180] [--test-minutes 60] [--work data/streams/snr] [--csv out.csv] [--plot det.png]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ssamba_stream import KeywordSpotter
from ssamba_stream.errors import UserError
from ssamba_stream.evaluation import (
    DEFAULT_TOLERANCE,
    SMOOTHING_CHOICES,
    OperatingPoint,
    StreamRun,
    det_axes,
    operating_point,
    require_matplotlib,
    run_stream,
    sweep,
    tune_posteriors,
)
from ssamba_stream.kws import DetectorConfig
from ssamba_training.stream_builder import StreamConfig, build_stream

TUNE_SEED, TEST_SEED = 5, 1  # the seeds of the repository's val180 and test60 streams


@dataclass(frozen=True)
class SnrRow:
    """The test stream at one SNR, scored three ways."""

    snr_db: float
    shipped: OperatingPoint
    tuned: OperatingPoint
    tuned_config: DetectorConfig
    in_sample: OperatingPoint | None  # None: no threshold reaches the budget
    curve: list[OperatingPoint]  # the test stream's sweep at the tuned smoothing, for the DET plot


def stream_path(work: Path, split: str, minutes: float, snr_db: float, seed: int) -> Path:
    level = "clean" if math.isinf(snr_db) else f"{snr_db:g}db"
    return work / f"{split}-{minutes:g}min-{level}-seed{seed}.wav"


def ensure_stream(config: StreamConfig) -> Path:
    """The stream's WAV, built once (the builder is deterministic, so a present file is the same one)."""
    if not (config.out.is_file() and config.out.with_suffix(".csv").is_file()):
        build_stream(config)
    return config.out


def at(config: DetectorConfig, stream: StreamRun) -> OperatingPoint:
    """The detector at ``config`` over a scored stream."""
    events = stream.posteriors.events(config)
    return operating_point(
        config.threshold, events, stream.keywords, stream.posteriors.seconds / 3600, DEFAULT_TOLERANCE
    )


def sweeps(stream: StreamRun, config: DetectorConfig) -> dict[int, list[OperatingPoint]]:
    """The threshold sweep at every smoothing the tuning chooses from."""
    return {
        blocks: sweep(
            stream.posteriors, dataclasses.replace(config, smoothing_blocks=blocks), stream.keywords
        )
        for blocks in SMOOTHING_CHOICES
    }


def best_within(curves: dict[int, list[OperatingPoint]], budget: float) -> OperatingPoint | None:
    """The lowest FRR within the budget over thresholds and smoothing (on the test stream: optimistic)."""
    points = [point for curve in curves.values() for point in curve if point.fa_per_hour <= budget]
    return min(points, key=lambda p: (p.frr, p.fa_per_hour), default=None)


def measure(
    args: argparse.Namespace, snr_db: float, shipped: DetectorConfig, keywords: tuple[str, ...]
) -> SnrRow:
    """One table row: streams at ``snr_db`` built with the model's ``keywords``, scored at its
    ``shipped`` detector, at the setting tuned on validation and at the test stream's best."""

    def stream(split: str, minutes: float, seed: int) -> StreamRun:
        out = stream_path(args.work, split, minutes, snr_db, seed)
        config = StreamConfig(args.data, out, split, minutes, snr_db, keywords, seed=seed)
        return run_stream(ensure_stream(config), out.with_suffix(".csv"), args.model)

    tune = stream("validation", args.tune_minutes, TUNE_SEED)
    test = stream("testing", args.test_minutes, TEST_SEED)
    tuned, _ = tune_posteriors(tune.posteriors, shipped, tune.keywords, max_fa_per_hour=args.max_fa_per_hour)
    curves = sweeps(test, shipped)
    best = best_within(curves, args.max_fa_per_hour)
    return SnrRow(snr_db, at(shipped, test), at(tuned, test), tuned, best, curves[tuned.smoothing_blocks])


def level_text(snr_db: float) -> str:
    return "clean" if math.isinf(snr_db) else f"{snr_db:g} dB"


def plot(rows: list[SnrRow], minutes: float, path: Path) -> None:
    """One DET curve per SNR on the test stream, each with its validation-tuned point marked."""
    most = max(point.fa_per_hour for row in rows for point in row.curve)
    figure, axes = det_axes(f"test stream ({minutes:g} min) by SNR, smoothing tuned on validation", most)
    for row in rows:
        line, = axes.plot([p.fa_per_hour for p in row.curve], [100 * p.frr for p in row.curve], "o-", ms=2,
                          label=level_text(row.snr_db))  # fmt: skip
        axes.plot(row.tuned.fa_per_hour, 100 * row.tuned.frr, "s", color=line.get_color())
    axes.legend(loc="best", title="squares: tuned on validation")
    figure.savefig(path, dpi=120)


def point_text(point: OperatingPoint | None) -> str:
    return "not reached" if point is None else f"{point.frr:6.1%} at {point.fa_per_hour:4.2f} FA/h"


def header(budget: float) -> str:
    tuned = f"tuned on validation <= {budget:g} FA/h"
    return f"{'SNR':>6} | {'shipped defaults':>22} | {tuned:>40} | {'test in-sample best':>22}"


def row_text(row: SnrRow) -> str:
    config = row.tuned_config
    tuned = f"{point_text(row.tuned)} ({config.threshold:g}, smoothing {config.smoothing_blocks})"
    return f"{level_text(row.snr_db):>6} | {point_text(row.shipped):>22} | {tuned:>40} | {point_text(row.in_sample):>22}"


def write_csv(rows: list[SnrRow], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["snr_db", "shipped_frr", "shipped_fa_per_hour", "tuned_threshold", "tuned_smoothing",
                      "tuned_frr", "tuned_fa_per_hour", "in_sample_frr", "in_sample_fa_per_hour"])  # fmt: skip
        for r in rows:
            best = r.in_sample
            out.writerow([r.snr_db, r.shipped.frr, r.shipped.fa_per_hour, r.tuned_config.threshold,
                          r.tuned_config.smoothing_blocks, r.tuned.frr, r.tuned.fa_per_hour,
                          "" if best is None else best.frr, "" if best is None else best.fa_per_hour])  # fmt: skip


def snr_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--snr-db takes comma-separated numbers or inf, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data set in the Speech Commands v2 layout")
    parser.add_argument("--model", default=None, help="exported model (default: the bundled one)")
    parser.add_argument("--snr-db", type=snr_list, default=[math.inf, 20.0, 10.0], help="e.g. inf,20,10")
    parser.add_argument("--tune-minutes", type=float, default=180.0)
    parser.add_argument("--test-minutes", type=float, default=60.0)
    parser.add_argument("--max-fa-per-hour", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path("data/streams/snr"), help="where the streams go")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the DET curves as a PNG")
    args = parser.parse_args(argv)
    try:
        if args.plot:
            require_matplotlib()  # before hours of audio, not after
        spotter = KeywordSpotter(args.model)  # its labels and detector defaults, read once
        shipped = spotter.detector.config
        keywords = tuple(label for label in spotter.labels if label not in shipped.ignore)
        print(header(args.max_fa_per_hour), flush=True)
        rows = []
        for snr_db in args.snr_db:
            rows.append(measure(args, snr_db, shipped, keywords))
            print(row_text(rows[-1]), flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        plot(rows, args.test_minutes, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
