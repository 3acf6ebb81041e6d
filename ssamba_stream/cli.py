"""`ssamba-stream` command line. Imports no torch: it runs on a device install."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import run_cli
from .formats import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_document, safetensors_shapes

app = typer.Typer(
    help="Streaming keyword spotting with SSAMBA (self-supervised bidirectional audio Mamba).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(f"ssamba-stream {__version__}")


@app.command()
def info(checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory (config.json + model.safetensors)")]) -> None:
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


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    run_cli(app, "ssamba-stream")


if __name__ == "__main__":
    main()
