"""`ssamba-stream wyoming`: a wake-word server for Home Assistant (Wyoming protocol), many clients batched.

Detector options are the ones file, stdin and mic take (cli_common); the server itself is
ssamba_stream.serving.wyoming_server, imported only here so the CLI runs without the `wyoming` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from . import cli_common as common
from .errors import UserError, absence
from .kws import parse_thresholds
from .runtime.spec import load_spec, sidecar_path
from .spotter import resolve_model


def wyoming(
    uri: Annotated[
        str, typer.Option(help="where to listen: tcp://HOST:PORT or unix://PATH")
    ] = "tcp://0.0.0.0:10400",
    model: common.ModelOption = None,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="serve every keyword model (.onnx + .json sidecar) in this folder"),
    ] = None,
    threshold: common.ThresholdOption = None,
    thresholds: common.ThresholdsOption = "",
    smoothing: common.SmoothingOption = None,
    refractory: common.RefractoryOption = None,
    vad: common.VadOption = False,
    vad_hold: common.VadHoldOption = None,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms",
            help="longest a ready block waits for other clients' blocks to share a model call",
        ),
    ] = 50.0,
    backend: common.BackendOption = "onnxruntime",
    threads: common.ThreadsOption = 1,
    save_activations: common.SaveActivationsOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="log every client's connection problems")
    ] = False,
) -> None:
    """Serve wake-word detection over the Wyoming protocol (Home Assistant) to any number of clients;
    --vad gives each client's stream its own speech gate."""
    hold = common.vad_hold(vad, vad_hold)
    try:
        from .serving.wyoming_server import WakeServer
    except ImportError:
        raise UserError(
            "the wyoming command needs the wyoming package: pip install 'ssamba-stream[serve]'"
        ) from None
    if max_wait_ms < 0:
        raise UserError(f"--max-wait-ms must be >= 0, got {max_wait_ms}")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    server = WakeServer(
        served_models(model, model_dir), backend=backend, threads=threads, max_wait=max_wait_ms / 1000, threshold=threshold,
        thresholds=parse_thresholds(thresholds), smoothing_blocks=smoothing, refractory_seconds=refractory,
        vad_hold_seconds=hold, save_activations=save_activations,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server, uri))
    typer.echo("stopped", err=True)


async def _serve(server, uri: str) -> None:
    listener = await server.serve(uri)
    server.start()
    where = ", ".join(_address(socket.getsockname()) for socket in listener.sockets)
    typer.echo(f"serving wake words {', '.join(server.wake_words)} on {where}", err=True)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # SIGTERM (service managers) stops it cleanly
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    listener.close()
    await server.stop()


def _address(name) -> str:
    return f"tcp://{name[0]}:{name[1]}" if isinstance(name, tuple) else f"unix://{name}"


def served_models(model: Path | None, model_dir: Path | None) -> list[Path]:
    """The model files to serve: ``--model``, every keyword model in ``--model-dir``, or the bundled one."""
    if model is not None and model_dir is not None:
        raise UserError("give --model or --model-dir, not both")
    if model_dir is None:
        return [resolve_model(model)]
    if not model_dir.is_dir():
        raise UserError(
            f"--model-dir {model_dir} {absence(model_dir, directory=True)}: give the folder your .onnx models are in"
        )
    found = [path for path in sorted(model_dir.rglob("*.onnx")) if sidecar_path(path).is_file()]
    models = [path for path in found if load_spec(path).task == "kws"]
    if not models:
        raise UserError(
            f"no keyword model (.onnx with its .json sidecar) in {model_dir}: export one there with "
            "'ssamba-export onnx CHECKPOINT -o DIR/NAME.onnx'"
        )
    return models
