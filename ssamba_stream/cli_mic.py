"""`ssamba-stream mic` (live keyword spotting from a microphone) and `ssamba-stream devices`.

Options, the engine factory and the result printer are the ones file and stdin use (cli_common).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import cli_common as common
from .cli_common import make_engine, print_results, summary_line
from .errors import UserError
from .microphone import NO_DEVICE, Microphone, listen
from .microphone import devices as input_devices


def mic(
    task: common.TaskOption = "kws",
    model: common.ModelOption = None,
    device: Annotated[
        str | None,
        typer.Option(help="input device index or (part of its) name; `ssamba-stream devices` lists them"),
    ] = None,
    backend: common.BackendOption = "onnxruntime",
    threshold: common.ThresholdOption = None,
    thresholds: common.ThresholdsOption = "",
    smoothing: common.SmoothingOption = None,
    refractory: common.RefractoryOption = None,
    as_json: common.JsonOption = False,
    seconds: Annotated[
        float | None, typer.Option(help="stop after this much audio (default: run until Ctrl-C)")
    ] = None,
    top_k: common.TopKOption = 3,
    every: common.EveryOption = 1.0,
    threads: common.ThreadsOption = 1,
    save_activations: common.SaveActivationsOption = None,
    vad: common.VadOption = False,
    vad_hold: common.VadHoldOption = None,
) -> None:
    """Spot keywords live from a microphone until Ctrl-C (or --seconds); a summary goes to stderr."""
    if seconds is not None and seconds <= 0:
        raise UserError(f"--seconds must be positive, got {seconds}")
    engine = make_engine(
        task,
        model,
        backend,
        threads,
        threshold=threshold,
        thresholds=thresholds,
        smoothing=smoothing,
        refractory=refractory,
        top_k=top_k,
        every=every,
        save_activations=save_activations,
        vad=vad,
        vad_hold=vad_hold,
    )
    count = 0

    def emit(results: list) -> None:
        nonlocal count
        count += print_results(results, as_json)

    with Microphone(device, model_rate=engine.spec.sample_rate) as microphone:
        typer.echo(f"listening on {_capture(microphone)}: Ctrl-C to stop", err=True)
        listen(engine, microphone, emit, seconds)
    typer.echo(f"{summary_line('mic', engine, count)}; {_losses(microphone)}", err=True)


def _capture(microphone: Microphone) -> str:
    settings = microphone.settings
    resampling = f"resampled to {microphone.model_rate} Hz" if settings.resampled else "no resampling"
    channels = "1 channel" if settings.channels == 1 else f"{settings.channels} channels downmixed"
    return f"{microphone.device.name} at {settings.rate} Hz ({resampling}, {channels})"


def _losses(microphone: Microphone) -> str:
    """Where the audio came from and how much was lost to overflows (never dropped silently)."""
    detail = ""
    if microphone.overflows:
        detail = f" ({microphone.device_overflows} device overruns, {microphone.lost_blocks} blocks lost behind the model)"
    return f"captured from {_capture(microphone)}, {microphone.overflows} overflows{detail}"


def devices() -> None:
    """List the input devices (index, name, host API, channels, default rate); * marks the default."""
    found = input_devices()
    if not found:
        raise UserError(NO_DEVICE)
    for device in found:
        typer.echo(f"{'*' if device.is_default else ' '} {device.index:>3}  {device.describe()}")
