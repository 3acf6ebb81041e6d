"""Options and helpers shared by the streaming commands (file, stdin, mic, evaluate): one definition
of each option's name and help, one engine factory, one result printer."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from .errors import UserError
from .runtime.backends import backend_names

ModelOption = Annotated[
    Path | None, typer.Option("--model", help="exported .onnx/.plan (default: the bundled 12-keyword model)")
]
TaskOption = Annotated[
    str, typer.Option("--task", help="kws (keyword events) or classify (top labels per window)")
]
BackendOption = Annotated[str, typer.Option(help=f"inference backend: {', '.join(backend_names())}")]
ThresholdOption = Annotated[
    float | None, typer.Option(help="detection threshold for every keyword (default: the model's)")
]
ThresholdsOption = Annotated[str, typer.Option(help="per-keyword thresholds, e.g. yes=0.7,stop=0.6")]
SmoothingOption = Annotated[
    int | None,
    typer.Option(
        "--smoothing", help="blocks the keyword posteriors are averaged over (default: the model's)"
    ),
]
RefractoryOption = Annotated[
    float | None,
    typer.Option(
        "--refractory", help="seconds after an event in which no keyword fires (default: the model's)"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="one JSON object per result line, for piping")]
TopKOption = Annotated[int, typer.Option("--top-k", help="classify: labels per window")]
EveryOption = Annotated[float, typer.Option("--every", help="classify: seconds between rankings")]
ThreadsOption = Annotated[int, typer.Option(help="CPU threads for the model")]
SaveActivationsOption = Annotated[
    Path | None,
    typer.Option(
        "--save-activations", help="kws: save each event's audio here (WAV + activations.jsonl line)"
    ),
]
VadOption = Annotated[
    bool,
    typer.Option(
        "--vad", help="kws: drop events with no speech shortly before them (Silero VAD; the vad extra)"
    ),
]
VadHoldOption = Annotated[
    float | None,
    typer.Option(
        "--vad-hold", help="with --vad: seconds before an event in which speech must be heard [1.5]"
    ),
]


def _show_version(ctx: typer.Context, value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"{ctx.find_root().info_name} {__version__}")
        raise typer.Exit()


def _root_options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit"),
    ] = None,
) -> None:
    """Options before the command (``--version``)."""


def add_version_option(app: typer.Typer) -> None:
    """``PROGRAM --version``: the installed version, as every command-line tool says it."""
    app.callback()(_root_options)


def make_engine(task: str, model: Path | None, backend: str, threads: int, *, threshold: float | None,
                thresholds: str, smoothing: int | None, refractory: float | None, top_k: int,
                every: float, save_activations: Path | None = None, vad: bool = False,
                vad_hold: float | None = None):  # fmt: skip
    """The spotter or classifier the mic, file and stdin commands share; the detector options
    (kws) override the model sidecar's defaults, None keeps them."""
    from .kws import parse_thresholds
    from .runtime.spec import TASKS
    from .spotter import KeywordSpotter, StreamClassifier

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: use --task kws or --task classify")
    if task == "classify":
        if save_activations is not None:
            raise UserError("--save-activations saves keyword events: use it with --task kws")
        if vad:
            raise UserError("--vad gates keyword events: use it with --task kws")
        classifier = StreamClassifier(
            model, backend=backend, threads=threads, top_k=top_k, every_seconds=every
        )
        if classifier.spec.task == "kws":
            typer.echo(f"note: {classifier.model_path.name} is a keyword model: ranking its labels per window as "
                       "asked (--task kws gives keyword events)", err=True)  # fmt: skip
        return classifier
    return KeywordSpotter(model, backend=backend, threads=threads, threshold=threshold,
                          thresholds=parse_thresholds(thresholds), smoothing_blocks=smoothing,
                          refractory_seconds=refractory, save_activations=save_activations,
                          vad=speech_gate(vad, vad_hold, model))  # fmt: skip


def vad_hold(vad: bool, hold: float | None) -> float | None:
    """The ``--vad`` gate's look back in seconds (None without ``--vad``); ``--vad-hold`` alone is an
    error rather than ignored."""
    from .vad import DEFAULT_HOLD_SECONDS

    if not vad:
        if hold is not None:
            raise UserError("--vad-hold sets the VAD gate's look back: add --vad")
        return None
    return DEFAULT_HOLD_SECONDS if hold is None else hold


def speech_gate(vad: bool, hold: float | None, model: Path | None, memory_seconds: float | None = 60.0):
    """The ``--vad`` gate at ``model``'s rate (None without it). ``memory_seconds`` None keeps every
    window (evaluate replays the stream)."""
    from .runtime.spec import load_spec
    from .spotter import resolve_model
    from .vad import SpeechGate

    seconds = vad_hold(vad, hold)
    if seconds is None:
        return None
    return SpeechGate(load_spec(resolve_model(model)).sample_rate, seconds, memory_seconds=memory_seconds)


def print_results(results: Iterable, as_json: bool, source: str | None = None) -> int:
    """Print events (kws) or rankings (classify) as they come; returns how many were printed."""
    count = 0
    for result in results:
        if as_json:
            document = result.to_json() if source is None else {"file": source, **result.to_json()}
            line = json.dumps(document)
        elif hasattr(result, "label"):
            line = f"{result.time:8.2f}s  {result.label:<10} {result.score:.3f}"
        else:
            line = f"{result.time:8.2f}s  " + "  ".join(f"{label} {score:.3f}" for label, score in result.top)
        typer.echo(line)
        count += 1
    sys.stdout.flush()
    return count


def summary_line(source: str, engine, results: int) -> str:
    kind = "events" if engine.task == "kws" else "rankings"
    return (f"{source}: {engine.seconds:.2f} s of audio, {results} {kind}, "
            f"real-time factor {engine.real_time_factor:.3f}")  # fmt: skip


def say_conversion(source: str, rate: int, channels: int, model_rate: int) -> None:
    """Tell the user (stderr) when their audio is downmixed or resampled on the way in."""
    steps = []
    if channels > 1:
        steps.append(f"{channels} channels downmixed to mono")
    if rate != model_rate:
        steps.append(f"resampled from {rate} Hz to {model_rate} Hz")
    if steps:
        typer.echo(f"note: {source}: {', '.join(steps)}", err=True)
