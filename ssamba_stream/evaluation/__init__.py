"""Continuous-stream evaluation of a keyword spotter: false rejects at a false-accept rate per hour.

Users of wake-word systems judge them by two numbers on long, real audio: the share of spoken
keywords that never fired (false-reject rate, FRR) and how often it fires on nothing (false
accepts per hour, FA/h). Both depend on the threshold, so the model runs once over the stream
and the detector is replayed on its posteriors for a sweep of thresholds; the DET curve (FRR
against FA/h) shows the trade-off, and "FRR at <= 1 FA/h" condenses it into one number.

Ground truth is a CSV with header ``start,end,label`` (seconds; ``training/stream_builder.py``
writes one), optionally with a fourth column ``word``: what was said (``town`` for an
``_unknown_``), so that false accepts can be traced to the words that set them off. An event matches a keyword occurrence of its own label when its time lies in
``[start, end + tolerance]`` (events fire after the word, at the end of their block); each
occurrence matches at most once. Every other event is a false accept. Labels the detector
ignores (``_unknown_``, ``_silence_``) are words to stay silent on, not keywords.

Torch-free; matplotlib is needed only for the DET plot. One job per module: ``labels`` (the ground
truth CSV), ``matching`` (events against it, operating points), ``stream`` (one model pass and the
threshold sweep), ``tuning`` (detector settings chosen on a validation stream), ``report`` (sweep
CSV, DET plot); this package exports what callers use.
"""

from .labels import Occurrence, read_ground_truth
from .matching import (
    DEFAULT_TOLERANCE,
    NOTHING_SAID,
    TARGET_FA_PER_HOUR,
    TARGET_FRR,
    FalseAccept,
    Matching,
    OperatingPoint,
    false_accepts,
    match_events,
    operating_point,
)
from .report import det_axes, plot_det, require_matplotlib, write_sweep_csv
from .stream import (
    DEFAULT_THRESHOLDS,
    StreamEvaluation,
    StreamPosteriors,
    StreamRun,
    best_within,
    describe_thresholds,
    evaluate_stream,
    run_stream,
    stream_posteriors,
    sweep,
)
from .tuning import SMOOTHING_CHOICES, tune_detector, tune_posteriors

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_TOLERANCE",
    "NOTHING_SAID",
    "SMOOTHING_CHOICES",
    "TARGET_FA_PER_HOUR",
    "TARGET_FRR",
    "FalseAccept",
    "Matching",
    "Occurrence",
    "OperatingPoint",
    "StreamEvaluation",
    "StreamPosteriors",
    "StreamRun",
    "best_within",
    "describe_thresholds",
    "det_axes",
    "evaluate_stream",
    "false_accepts",
    "match_events",
    "operating_point",
    "plot_det",
    "read_ground_truth",
    "require_matplotlib",
    "run_stream",
    "stream_posteriors",
    "sweep",
    "tune_detector",
    "tune_posteriors",
    "write_sweep_csv",
]
