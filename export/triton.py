"""Write a Triton Inference Server model repository for the ONNX step graph.

Triton's sequence batcher keeps each stream's state inside the server (implicit state), so a
client sends only PCM chunks with a sequence id: ``REPO/<name>/config.pbtxt`` pairs every state
input with its ``<name>_out`` output, zero at a sequence's start, and ``REPO/<name>/1/model.onnx``
is the step graph wrapped for it (triton_graph.py). Batches mix streams: the graph must have been
exported with a free batch (``ssamba-export onnx --batch 0``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner

from ssamba_stream.errors import UserError, absence
from ssamba_stream.runtime.spec import BATCH, StreamModelSpec, load_spec

from .triton_graph import (
    READY,
    START,
    StateLayout,
    cpu_session,
    max_wrapper_difference,
    run_outputs,
    wrap_step_graph,
)

PLATFORM = "onnxruntime_onnx"
LABELS_FILE = "labels.txt"
QUEUE_DELAY_US = 1000  # how long a step may wait for others to batch with: 1 ms of a 160 ms block
TRITON_TYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float64): "TYPE_FP64",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.bool_): "TYPE_BOOL",
}


class Word(str):
    """A bare protobuf text-format token (an enum value such as TYPE_FP32), written unquoted."""


def write_repository(
    model_path: str | Path,
    repo: str | Path,
    name: str | None = None,
    max_batch: int = 8,
    max_sequences: int = 64,
    idle_seconds: float = 5.0,
    force: bool = False,
) -> Path:
    """Write ``repo/<name>/`` for ``model_path`` and return that folder. ``name`` defaults to the
    graph's file name, or its folder's for ``model.onnx``."""
    model_path, repo = Path(model_path), Path(repo)
    name = name or (model_path.parent.name if model_path.stem == "model" else model_path.stem)
    if max_batch < 1 or max_sequences < 1:
        raise UserError("--max-batch and --max-sequences must be at least 1")
    step = _load_graph(model_path)
    spec = load_spec(model_path)
    states = _state_layouts(model_path, spec, step)
    _check_repository(repo, force)
    outputs = _output_shapes(step, states)
    wrapped = wrap_step_graph(step, states, outputs)
    difference = max_wrapper_difference(step, wrapped, states)
    if difference > 1e-5:
        raise UserError(
            f"the Triton wrapper of {model_path} differs from it by {difference:.2e}: please report"
        )
    config = model_config(name, wrapped, states, max_batch, max_sequences, round(idle_seconds * 1e6))
    partial = repo / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "1").mkdir(parents=True)
    onnx.save(wrapped, partial / "1" / "model.onnx")
    (partial / "config.pbtxt").write_text(config)
    (partial / LABELS_FILE).write_text("".join(f"{label}\n" for label in spec.labels))
    target = repo / name
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def model_config(
    name: str,
    wrapped: onnx.ModelProto,
    states: tuple[StateLayout, ...],
    max_batch: int,
    max_sequences: int,
    idle_us: int,
) -> str:
    """config.pbtxt for the wrapped graph: plain inputs and outputs, START/READY, the state pairs."""
    state_names = {n for s in states for n in (s.name, s.output)} | {START, READY}
    tensors = {v.name: _tensor(v) for v in (*wrapped.graph.input, *wrapped.graph.output)}
    inputs = [tensors[v.name] for v in wrapped.graph.input if v.name not in state_names]
    outputs = [tensors[v.name] for v in wrapped.graph.output if v.name not in state_names]
    for output in outputs:
        if output["name"] == "posteriors":  # labels for Triton's classification extension
            output["label_filename"] = LABELS_FILE
    controls = [
        {
            "name": control,
            "control": [{"kind": Word(f"CONTROL_SEQUENCE_{control}"), "int32_false_true": [0, 1]}],
        }
        for control in (START, READY)
    ]
    state = [
        {
            "input_name": s.name,
            "output_name": s.output,
            "data_type": tensors[s.name]["data_type"],
            "dims": list(s.dims),
            "initial_state": [
                {
                    "name": "zero",
                    "data_type": tensors[s.name]["data_type"],
                    "dims": list(s.dims),
                    "zero_data": True,
                }
            ],
        }
        for s in states
    ]
    config = {
        "name": name,
        "platform": PLATFORM,
        "max_batch_size": max_batch,
        "input": inputs,
        "output": outputs,
        "sequence_batching": {
            "max_sequence_idle_microseconds": idle_us,
            "control_input": controls,
            "state": state,
            "oldest": {
                "max_candidate_sequences": max_sequences,
                "preferred_batch_size": [max_batch],
                "max_queue_delay_microseconds": QUEUE_DELAY_US,
            },
        },
    }
    return "".join(_pbtxt(config, 0))


def _pbtxt(message: dict, depth: int) -> list[str]:
    """Protobuf text format for nested dicts: lists of dicts are repeated messages."""
    pad, lines = "  " * depth, []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{\n", *_pbtxt(value, depth + 1), f"{pad}}}\n"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} [\n")
            for index, item in enumerate(value):
                comma = "," if index < len(value) - 1 else ""
                lines += [f"{pad}  {{\n", *_pbtxt(item, depth + 2), f"{pad}  }}{comma}\n"]
            lines.append(f"{pad}]\n")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}\n")
    return lines


def _scalar(value: object) -> str:
    if isinstance(value, Word):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _tensor(value: onnx.ValueInfoProto) -> dict:
    """A config input/output entry: name, Triton data type, dims without the batch (-1 if free)."""
    tensor = value.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    if dtype not in TRITON_TYPES:
        raise UserError(f"tensor {value.name} has type {dtype}, which this exporter does not map to Triton")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim[1:]]
    return {"name": value.name, "data_type": Word(TRITON_TYPES[dtype]), "dims": dims}


def _load_graph(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise UserError(f"model file {path} {absence(path)}: export one with 'ssamba-export onnx CHECKPOINT'")
    try:
        model = onnx.inliner.inline_local_functions(onnx.load(path))  # plain ops for any Triton backend
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf and the checker raise several types for a file that is not ONNX
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{path} is not an ONNX model ({first})") from None
    if not model.graph.input:
        raise UserError(f"{path} is not an ONNX model (no graph inputs)")
    return model


def _state_layouts(path: Path, spec: StreamModelSpec, step: onnx.ModelProto) -> tuple[StateLayout, ...]:
    """The state tensors the sidecar names, checked against the graph's inputs and outputs."""
    if not spec.state:
        raise UserError(f"{path} carries no state: Triton's sequence batcher needs a streaming step graph")
    if spec.extra.get("batch") is not None:
        raise UserError(
            f"{path} was exported for a fixed batch of {spec.extra['batch']}: Triton batches streams, "
            "so re-export it with 'ssamba-export onnx CHECKPOINT --batch 0'"
        )
    inputs = {v.name for v in step.graph.input}
    outputs = {v.name for v in step.graph.output}
    layouts = []
    for tensor in spec.state:
        if tensor.name not in inputs or f"{tensor.name}_out" not in outputs or tensor.shape.count(BATCH) != 1:
            raise UserError(f"{path} does not match its sidecar (state {tensor.name}): re-export both")
        axis = tensor.shape.index(BATCH)
        layouts.append(StateLayout(tensor.name, tuple(int(d) for d in tensor.shape if d != BATCH), axis))
    return tuple(layouts)


def _check_repository(repo: Path, force: bool) -> None:
    if repo.exists() and not repo.is_dir():
        raise UserError(f"{repo} is a file, not a model repository folder")
    if repo.is_dir() and any(repo.iterdir()) and not force:
        raise UserError(
            f"{repo} is not empty: pass --force to write the model there anyway "
            "(a model of the same name is replaced, other models are kept)"
        )


def _output_shapes(step: onnx.ModelProto, states: tuple[StateLayout, ...]) -> dict[str, tuple[int, ...]]:
    """Non-batch sizes of the plain outputs, from one step at batch 1 (the exporter leaves some
    symbolic; Triton's config and the wrapper declare them fixed)."""
    session = cpu_session(step)
    feed = {}
    for value in session.get_inputs():
        shape = tuple(1 if not isinstance(d, int) else d for d in value.shape)
        feed[value.name] = np.zeros(shape, np.float32)
    state_outputs = {s.output for s in states}
    return {n: v.shape[1:] for n, v in run_outputs(session, feed).items() if n not in state_outputs}
