"""`ssamba-stream` command line. Imports no torch: it runs on a device install."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from . import __version__
from .cli_common import (
    BackendOption,
    EveryOption,
    JsonOption,
    ModelOption,
    RefractoryOption,
    SaveActivationsOption,
    SmoothingOption,
    TaskOption,
    ThreadsOption,
    ThresholdOption,
    ThresholdsOption,
    TopKOption,
    VadHoldOption,
    VadOption,
    add_version_option,
    make_engine,
    print_results,
    say_conversion,
    summary_line,
)
from .cli_evaluate import evaluate
from .cli_mic import devices, mic
from .cli_wyoming import wyoming
from .errors import UserError, run_cli
from .formats import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_document, safetensors_shapes

app = typer.Typer(
    help="Streaming keyword spotting with SSAMBA (self-supervised bidirectional audio Mamba).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich panels print '<bool>' after every flag
)
add_version_option(app)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(f"ssamba-stream {__version__}")


@app.command()
def info(
    checkpoint: Annotated[
        Path, typer.Argument(help="checkpoint directory (config.json + model.safetensors)")
    ],
) -> None:
    """Describe a checkpoint: architecture, streaming block, labels, parameter count."""
    document = read_checkpoint_document(checkpoint)
    config = document.get("config", {})
    shapes = safetensors_shapes(checkpoint / WEIGHTS_FILE)
    params = sum(_product(shape) for shape in shapes.values())
    block = config.get("backward_block")
    lines = [
        f"model: {config.get('name')} ({params:,} parameters, {len(shapes)} tensors)",
        f"encoder: embed {config.get('embed_dim')}, depth {config.get('depth')}, {config.get('tokens')} tokens",
        "backward: " + ("full sequence (offline only)" if block is None else f"block-local, {block} tokens"),
        f"labels: {', '.join(config.get('labels') or []) or '(none)'}",
        f"config: {checkpoint / CONFIG_FILE}",
    ]
    typer.echo("\n".join(lines))


def _product(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


@app.command()
def file(
    paths: Annotated[
        list[Path], typer.Argument(help="audio files (WAV, FLAC, OGG, ...; any rate, mono or stereo)")
    ],
    task: TaskOption = "kws",
    model: ModelOption = None,
    backend: BackendOption = "onnxruntime",
    threshold: ThresholdOption = None,
    thresholds: ThresholdsOption = "",
    smoothing: SmoothingOption = None,
    refractory: RefractoryOption = None,
    as_json: JsonOption = False,
    top_k: TopKOption = 3,
    every: EveryOption = 1.0,
    threads: ThreadsOption = 1,
    save_activations: SaveActivationsOption = None,
    vad: VadOption = False,
    vad_hold: VadHoldOption = None,
) -> None:
    """Run audio files through the streaming engine at full speed; each file is its own stream."""
    from .audio import iter_audio_blocks

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
    failures = []
    for path in paths:
        source = str(path) if len(paths) > 1 else None
        engine.reset()
        if source and not as_json:
            typer.echo(f"== {path}")
        count = 0
        try:
            for index, (block, rate) in enumerate(iter_audio_blocks(path)):
                if index == 0:
                    say_conversion(str(path), rate, block.shape[1], engine.spec.sample_rate)
                count += print_results(engine.process(block, rate), as_json, source)
            count += print_results(engine.finish(), as_json, source)
        except UserError as exc:  # report, then go on with the other files
            typer.echo(f"ssamba-stream: error: {exc}", err=True)
            failures.append(path)
            continue
        except KeyboardInterrupt:  # Ctrl-C: say how far this file got, then stop
            typer.echo(summary_line(str(path), engine, count) + " (interrupted)", err=True)
            raise typer.Exit(130) from None
        typer.echo(summary_line(str(path), engine, count), err=True)
    if failures:
        raise typer.Exit(2)


STDIN_FORMATS = {"s16le": np.dtype("<i2"), "s32le": np.dtype("<i4"), "f32le": np.dtype("<f4")}


def read_pcm(stream, sample_format: str, channels: int, frames_per_read: int) -> Iterator[np.ndarray]:
    """(frames, channels) arrays from a raw PCM byte stream; a trailing partial frame is an error."""
    dtype = STDIN_FORMATS[sample_format]
    frame_bytes = dtype.itemsize * channels
    pending = b""
    while True:
        data = stream.read(frames_per_read * frame_bytes)
        if not data:
            break
        data = pending + data
        whole = len(data) - len(data) % frame_bytes
        pending = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype=dtype).reshape(-1, channels)
    if pending:
        raise UserError(
            f"input ended inside a sample frame ({len(pending)} stray bytes): check --format {sample_format} "
            f"and --channels {channels}"
        )


@app.command()
def stdin(
    rate: Annotated[int, typer.Option(help="sample rate of the raw PCM, Hz")],
    sample_format: Annotated[str, typer.Option("--format", help="s16le, s32le or f32le")] = "s16le",
    channels: Annotated[int, typer.Option(help="interleaved channels (downmixed to mono)")] = 1,
    task: TaskOption = "kws",
    model: ModelOption = None,
    backend: BackendOption = "onnxruntime",
    threshold: ThresholdOption = None,
    thresholds: ThresholdsOption = "",
    smoothing: SmoothingOption = None,
    refractory: RefractoryOption = None,
    as_json: JsonOption = False,
    top_k: TopKOption = 3,
    every: EveryOption = 1.0,
    threads: ThreadsOption = 1,
    save_activations: SaveActivationsOption = None,
    vad: VadOption = False,
    vad_hold: VadHoldOption = None,
) -> None:
    """Stream raw PCM from standard input, e.g. `arecord -f S16_LE -r 16000 | ssamba-stream stdin --rate 16000`."""
    if sample_format not in STDIN_FORMATS:
        raise UserError(f"unknown --format {sample_format!r}: use one of {', '.join(STDIN_FORMATS)}")
    if channels < 1:
        raise UserError(f"--channels must be at least 1, got {channels}")
    if rate < 1:
        raise UserError(f"--rate must be a positive number of Hz, got {rate}")
    if sys.stdin is None:  # started with standard input closed (`<&-`)
        raise UserError(
            "standard input is closed: pipe raw PCM into it, e.g. arecord -f S16_LE -r 16000 | ssamba-stream stdin --rate 16000"
        )
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
    frames = max(1, rate // 10)  # 100 ms reads: results appear with at most one read of delay
    say_conversion("stdin", rate, channels, engine.spec.sample_rate)
    for chunk in read_pcm(sys.stdin.buffer, sample_format, channels, frames):
        count += print_results(engine.process(chunk, rate), as_json)
    count += print_results(engine.finish(), as_json)
    typer.echo(summary_line("stdin", engine, count), err=True)


app.command("mic")(mic)
app.command("devices")(devices)
app.command("evaluate")(evaluate)
app.command("wyoming")(wyoming)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    run_cli(app, "ssamba-stream")


if __name__ == "__main__":
    main()
