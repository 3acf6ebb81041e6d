"""Export a streaming checkpoint as an ONNX step graph plus its JSON sidecar.

The graph is ``StreamStep`` traced: bidirectional layers run their one-block path (the
channels-last ``block_scan``), any other scan is swapped for a standard-op form (see
ssamba_stream/model/graph_scan.py). Inputs ``pcm`` (batch, B*320) and the state tensors; outputs ``posteriors``,
``logits``, ``features`` and the new state as ``<name>_out``. The batch dimension is dynamic, so
one graph serves several streams.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from ssamba_stream import __version__
from ssamba_stream.errors import UserError
from ssamba_stream.formats import atomic_write
from ssamba_stream.kws import DetectorConfig
from ssamba_stream.model.block_scan import BlockScan
from ssamba_stream.model.checkpoint import load_model
from ssamba_stream.model.graph_scan import GRAPH_SCANS
from ssamba_stream.model.streaming import StreamStep
from ssamba_stream.runtime.backends import OUTPUT_NAMES
from ssamba_stream.runtime.spec import BATCH, TASKS, StreamModelSpec, TensorSpec, file_sha256, sidecar_path

DEFAULT_OPSET = 17
DEFAULT_SCAN = "unrolled"  # generic scan form (unidirectional layers); see graph_scan.py


def build_step(
    checkpoint: str | Path, block: int | None = None, scan: str = DEFAULT_SCAN, activation: str = "softmax"
) -> StreamStep:
    """The step module of a checkpoint, with the given block size and graph scan form."""
    if scan not in GRAPH_SCANS:
        raise UserError(f"unknown scan form {scan!r}: choose one of {', '.join(GRAPH_SCANS)}")
    try:
        return StreamStep(load_model(checkpoint), block=block, scan=scan, activation=activation)
    except ValueError as exc:
        raise UserError(f"{checkpoint}: {exc}") from None


def state_specs(step: StreamStep) -> tuple[TensorSpec, ...]:
    """Shapes of the state tensors, with the batch dimension symbolic."""
    specs = []
    for name, value in step.initial_state(1).items():
        batch_axis = step.state_batch_axis(name)
        shape = tuple(BATCH if axis == batch_axis else size for axis, size in enumerate(value.shape))
        specs.append(TensorSpec(name, shape))
    return tuple(specs)


def untuned_detector(labels: tuple[str, ...]) -> DetectorConfig:
    """The detector defaults of a fresh export: threshold 0.5, the usual non-keyword labels ignored."""
    return DetectorConfig(ignore=tuple(label for label in labels if label in DetectorConfig().ignore))


def previous_detector(output: Path, source_sha256: str, block: int, labels: tuple[str, ...]) -> dict | None:
    """The tuned detector section of the sidecar being replaced, when it describes the same weights,
    block size and labels (a re-export must not reset ``ssamba-export tune``'s thresholds to 0.5)."""
    try:
        previous = json.loads(sidecar_path(output).read_text())
    except (OSError, ValueError):
        return None
    same = (previous.get("source", {}).get("sha256"), previous.get("block_tokens"), previous.get("labels"))
    return previous.get("detector") if same == (source_sha256, block, list(labels)) else None


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    block: int | None = None,
    scan: str = DEFAULT_SCAN,
    activation: str = "softmax",
    opset: int = DEFAULT_OPSET,
    batch: int | None = 1,
    task: str = "kws",
) -> StreamModelSpec:
    """Write ``output`` (.onnx) and its sidecar (.json); returns the sidecar's content.

    ``batch`` fixes the number of streams one call serves; ``None`` leaves it free. A fixed batch
    lets the exporter fold all shape arithmetic away (about a third fewer graph nodes, and faster
    on CPU); a free one serves any number of streams with one graph. ``task`` tells the runtime
    what the labels are: keywords (``kws``, events) or classes to rank (``classify``).
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if block is not None and block < 1:
        raise UserError(
            f"block must be a positive number of tokens (20 ms each), got {block}: e.g. --block 8"
        )
    if batch is not None and batch < 1:
        raise UserError(f"batch must be a positive number of streams (or None for any), got {batch}")
    if opset < 17:
        raise UserError(f"opset {opset} is too old: the step graph needs opset 17 or newer")
    checkpoint, output = Path(checkpoint), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    step = build_step(checkpoint, block, scan, activation)
    state = step.initial_state(batch or 1)
    pcm = torch.zeros(batch or 1, step.chunk_samples)
    dynamic = None
    if batch is None:
        dynamic = {"pcm": {0: BATCH}, **{name: {0: BATCH} for name in OUTPUT_NAMES}}
        for name in step.state_names:
            dynamic[name] = dynamic[f"{name}_out"] = {step.state_batch_axis(name): BATCH}

    def write_graph(path: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on Python-side shape checks
            torch.onnx.export(
                step,
                (pcm, *state.values()),
                str(path),
                input_names=["pcm", *step.state_names],
                output_names=[*OUTPUT_NAMES, *(f"{n}_out" for n in step.state_names)],
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
                export_modules_as_functions={BlockScan},  # for hosts with a native scan kernel
                dynamo=False,
            )

    atomic_write(output, write_graph)
    config = step.model.config
    labels = tuple(config.labels) or tuple(f"class_{i}" for i in range(config.num_classes))
    source_sha = file_sha256(checkpoint / "model.safetensors")
    detector = (
        previous_detector(output, source_sha, step.mode.block, labels)
        or untuned_detector(labels).to_sidecar()
    )
    spec = StreamModelSpec(
        labels=labels,
        sample_rate=config.sample_rate,
        block_tokens=step.mode.block,
        chunk_samples=step.chunk_samples,
        activation=activation,
        state=state_specs(step),
        detector=detector,
        task=task,
        fingerprint=file_sha256(output),
        extra={
            "head_window_tokens": config.head_window,
            "head_pool": config.head_pool,
            "normalisation": {"mean": config.norm_mean, "std": config.norm_std},
            "source": {
                "checkpoint": os.path.relpath(checkpoint.resolve(), output.parent.resolve()),
                "sha256": source_sha,
            },
            "batch": batch,
            "export": {
                "format": "onnx",
                "opset": opset,
                "scan": scan,
                "ssamba_stream": __version__,
                "torch": torch.__version__,
            },
            "model": config.to_dict(),
        },
    )
    atomic_write(sidecar_path(output), lambda p: p.write_text(json.dumps(spec.to_json(), indent=2) + "\n"))
    return spec
