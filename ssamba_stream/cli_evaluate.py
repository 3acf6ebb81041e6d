"""`ssamba-stream evaluate`: FRR at FA/h of a keyword model on a long labelled stream (torch-free)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .audio import audio_seconds
from .cli_common import (
    BackendOption,
    ModelOption,
    RefractoryOption,
    SmoothingOption,
    ThresholdOption,
    ThresholdsOption,
    VadHoldOption,
    VadOption,
    speech_gate,
)
from .errors import UserError
from .evaluation import DEFAULT_TOLERANCE, evaluate_stream, plot_det, require_matplotlib, write_sweep_csv
from .kws import DetectorConfig, parse_thresholds
from .runtime.spec import load_spec
from .spotter import resolve_model

LONG_STREAM_MINUTES = 5.0  # evaluate reports progress on streams this long or longer


def evaluate(
    stream: Annotated[
        Path, typer.Option("--stream", help="stream WAV (training/stream_builder.py writes one)")
    ],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="ground truth start,end,label[,word] CSV (default: STREAM.csv)"),
    ] = None,
    model: ModelOption = None,
    backend: BackendOption = "onnxruntime",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="folder for the DET plot and sweep CSV (default: next to the stream)"),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="seconds after a word's end in which its event still counts")
    ] = DEFAULT_TOLERANCE,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    threshold: ThresholdOption = None,
    thresholds: ThresholdsOption = "",
    smoothing: SmoothingOption = None,
    refractory: RefractoryOption = None,
    vad: VadOption = False,
    vad_hold: VadHoldOption = None,
) -> None:
    """Run the model once over a labelled stream and report FRR and false accepts per hour over a threshold sweep.

    The detector options score one setting other than the model's defaults; the sweep then runs at
    that smoothing; --vad gates the events of every point."""
    require_matplotlib()
    folder = writable_folder(out or stream.parent)
    detector = None
    if threshold is not None or thresholds or smoothing is not None or refractory is not None:
        spec = load_spec(resolve_model(model))
        detector = (
            DetectorConfig.from_sidecar(spec.detector)
            .with_overrides(threshold, parse_thresholds(thresholds), smoothing, refractory)
            .for_labels(spec.labels)
        )
    gate = speech_gate(vad, vad_hold, model, memory_seconds=None)
    result = evaluate_stream(stream, labels or stream.with_suffix(".csv"), model, backend=backend,
                             tolerance=tolerance, detector=detector, progress=progress_printer(stream),
                             vad=gate)  # fmt: skip
    det, table = folder / f"{stream.stem}_det.png", folder / f"{stream.stem}_sweep.csv"
    try:
        plot_det(result, det)
        write_sweep_csv(result, table)
    except OSError as exc:  # the folder changed under us: the result itself is not lost
        typer.echo(json.dumps(result.to_json(), indent=2) if json_output else result.summary())
        raise UserError(
            f"could not write the report to {folder} ({exc.strerror}): the result above is complete"
        ) from None
    if json_output:
        typer.echo(json.dumps({**result.to_json(), "det_plot": str(det), "sweep_csv": str(table)}, indent=2))
    else:
        typer.echo(f"{result.summary()}\nwrote {det} and {table}")


def progress_printer(stream: Path) -> Callable[[float], None] | None:
    """On streams of LONG_STREAM_MINUTES or more, a stderr line at every tenth of the stream."""
    total = audio_seconds(stream)
    if total < LONG_STREAM_MINUTES * 60:
        return None
    shown = 0

    def show(done: float) -> None:
        nonlocal shown
        tenth = int(10 * done / total)
        if shown < tenth < 10:
            shown = tenth
            typer.echo(f"{stream.name}: {done / 60:.1f} of {total / 60:.1f} min ({tenth * 10}%)", err=True)

    return show


def writable_folder(folder: Path) -> Path:
    """``folder``, created if needed and checked writable before an hour of audio is evaluated."""
    if folder.exists() and not folder.is_dir():
        raise UserError(
            f"--out {folder} is a file, not a folder: pass a folder for the DET plot and sweep CSV"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise UserError(
            f"cannot write to --out {folder} ({exc.strerror}): pass a folder you can write to"
        ) from None
    return folder
