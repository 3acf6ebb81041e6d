"""`ssamba-export`: checkpoint -> ONNX step graph -> TensorRT engine or Triton repository, and the equivalence check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssamba_stream.cli_common import BackendOption, add_version_option
from ssamba_stream.errors import UserError, run_cli

app = typer.Typer(
    help="Export a streaming SSAMBA checkpoint as a step graph with carried state (ONNX, TensorRT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich panels print '<bool>' after every flag
)
add_version_option(app)


@app.command()
def onnx(
    checkpoint: Annotated[
        Path, typer.Argument(help="checkpoint directory (config.json + model.safetensors)")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="the .onnx file to write (a .json sidecar goes beside it)")
    ],
    block: Annotated[
        int | None, typer.Option(help="tokens per step (20 ms each); default: the checkpoint's")
    ] = None,
    scan: Annotated[
        str,
        typer.Option(
            help="scan form for unidirectional layers: unrolled, cumsum (log-space) or segsum; "
            "bidirectional layers always use the channels-last block scan"
        ),
    ] = "unrolled",
    batch: Annotated[int, typer.Option(help="streams per call, fixed (faster); 0 = any number")] = 1,
    activation: Annotated[
        str, typer.Option(help="posteriors: softmax (single-label) or sigmoid")
    ] = "softmax",
    opset: Annotated[int, typer.Option(help="ONNX opset, >= 17")] = 17,
    task: Annotated[
        str, typer.Option(help="kws (keyword events) or classify (top-k labels per window)")
    ] = "kws",
) -> None:
    """Export CHECKPOINT as an ONNX step graph: PCM chunk + state in, posteriors + state out."""
    from .onnx_export import export_onnx, untuned_detector

    if output.suffix != ".onnx":
        raise UserError(f"output {output} must end in .onnx: the sidecar is written beside it as .json")
    spec = export_onnx(
        checkpoint,
        output,
        block=block,
        scan=scan,
        activation=activation,
        opset=opset,
        batch=batch or None,
        task=task,
    )
    typer.echo(
        f"wrote {output} and {output.with_suffix('.json')}: {len(spec.labels)} labels, block of "
        f"{spec.block_tokens} tokens = {spec.chunk_samples} samples ({spec.block_seconds * 1000:.0f} ms)"
    )
    if spec.detector == untuned_detector(spec.labels).to_sidecar():
        typer.echo(f"detector defaults untuned (threshold 0.5): tune them with 'ssamba-export tune {output} "
                   "--stream HELD_OUT.wav'")  # fmt: skip
    else:
        typer.echo("detector defaults kept from the sidecar this export replaces (same weights, block and labels): "
                   f"threshold {spec.detector.get('threshold')}, smoothing {spec.detector.get('smoothing_blocks')}")  # fmt: skip


@app.command()
def trt(
    model: Annotated[Path, typer.Argument(help="the .onnx step graph (with its .json sidecar)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .plan engine to write")],
    fp16: Annotated[
        bool, typer.Option("--fp16", help="allow fp16 kernels (the frontend stays fp32)")
    ] = False,
    workspace: Annotated[int, typer.Option(help="builder workspace in MB")] = 1024,
    max_batch: Annotated[int, typer.Option(help="most streams one call may batch")] = 8,
) -> None:
    """Compile the ONNX step graph to a TensorRT engine for this GPU (TensorRT 10.x)."""
    from .tensorrt_build import build_engine

    build_engine(model, output, fp16=fp16, workspace_mb=workspace, max_batch=max_batch)
    typer.echo(f"wrote {output} and {output.with_suffix('.json')}")


@app.command()
def triton(
    model: Annotated[Path, typer.Argument(help="the .onnx step graph (with its .json sidecar), free batch")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the model repository folder to write into")],
    name: Annotated[
        str | None,
        typer.Option(help="model name in the repository; default: the file's (its folder's for model.onnx)"),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="most streams one call may batch (max_batch_size)")] = 8,
    max_sequences: Annotated[
        int, typer.Option(help="streams the sequence batcher tracks at once (max_candidate_sequences)")
    ] = 64,
    idle_seconds: Annotated[float, typer.Option(help="a stream idle this long is dropped")] = 5.0,
    force: Annotated[bool, typer.Option("--force", help="write into a non-empty repository")] = False,
) -> None:
    """Write a Triton Inference Server model repository: sequence batcher, state kept in the server."""
    from .triton import write_repository

    folder = write_repository(model, output, name=name, max_batch=max_batch, max_sequences=max_sequences,
                              idle_seconds=idle_seconds, force=force)  # fmt: skip
    typer.echo(
        f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx: tritonserver --model-repository {output}"
    )


@app.command()
def tune(
    model: Annotated[
        Path, typer.Argument(help="exported model (.onnx or .plan) whose sidecar gets the defaults")
    ],
    stream: Annotated[Path, typer.Option(help="held-out labelled stream WAV (training/stream_builder.py)")],
    labels: Annotated[Path | None, typer.Option(help="its start,end,label CSV (default: STREAM.csv)")] = None,
    max_fa_per_hour: Annotated[float, typer.Option(help="false accepts per hour allowed")] = 1.0,
    per_keyword: Annotated[
        bool, typer.Option(help="also try one threshold per keyword (tune on a stream of hours)")
    ] = False,
) -> None:
    """Tune the detector defaults (threshold, smoothing) on a held-out stream and store them in the sidecar."""
    from ssamba_stream.evaluation import describe_thresholds, tune_detector
    from ssamba_stream.runtime.spec import sidecar_path, write_detector_defaults

    config, point = tune_detector(stream, labels or stream.with_suffix(".csv"), model,
                                  max_fa_per_hour=max_fa_per_hour, per_keyword=per_keyword)  # fmt: skip
    write_detector_defaults(model, config.to_sidecar())
    chosen = "".join(f" {label}={value:g}" for label, value in config.thresholds.items())
    typer.echo(
        f"wrote {sidecar_path(model)}: {describe_thresholds(config)}{chosen}, smoothing {config.smoothing_blocks} "
        f"blocks (on {stream.name}: FRR {point.frr:.1%}, {point.fa_per_hour:.2f} FA/h)"
    )


@app.command()
def verify(
    model: Annotated[Path, typer.Argument(help="exported step graph (.onnx or .plan)")],
    checkpoint: Annotated[Path, typer.Option(help="the checkpoint it was exported from")],
    backend: BackendOption = "onnxruntime",
    seconds: Annotated[float, typer.Option(help="length of the test signal")] = 30.0,
    audio: Annotated[Path | None, typer.Option(help="a recording to use instead of the test signal")] = None,
    tolerance: Annotated[float, typer.Option(help="largest allowed logit difference")] = 1e-4,
) -> None:
    """Stream audio through MODEL in random chunk sizes and compare with the offline PyTorch forward."""
    from .verify import max_logit_difference, test_signal

    if audio is not None:
        from ssamba_stream.audio import load_audio
        from ssamba_stream.runtime.spec import load_spec

        signal = load_audio(audio, load_spec(model).sample_rate)
    else:
        signal = test_signal(seconds)
    difference, blocks = max_logit_difference(model, checkpoint, signal, backend=backend)
    verdict = "ok" if difference <= tolerance else "FAILED"
    typer.echo(
        f"{verdict}: max |streamed - offline| logit difference {difference:.3e} over {blocks} blocks (tolerance {tolerance:g})"
    )
    if difference > tolerance:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    run_cli(app, "ssamba-export")


if __name__ == "__main__":
    main()
