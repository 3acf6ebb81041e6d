"""Wrap the step graph for Triton's sequence batcher with implicit state.

Triton batches implicit state along the first axis, and its onnxruntime backend hands the control
tensors to the model as inputs. The wrapper therefore takes every state tensor batch-first
(a Transpose around each state whose batch axis is elsewhere, e.g. ``conv_state`` (layers, batch,
...)), and takes ``START`` and ``READY`` (int32, (batch, 1)): a sequence's first request starts
from zero state whatever is fed, and a slot that is not ready keeps its state. Everything else is
the exported graph, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

START, READY = "START", "READY"
# Names of the wrapper's own tensors, kept apart from the exporter's ("/layers.0/...", "onnx::...").
_INNER = "__step"  # suffix of the step graph's state tensors inside the wrapper
_START_MASK, _READY_MASK, _ZERO = "triton/start", "triton/ready", "triton/zero"


@dataclass(frozen=True)
class StateLayout:
    """One carried state tensor: its name, its shape in the step graph, and where the batch is."""

    name: str
    shape: tuple[int, ...]  # without the batch dimension, in the step graph's order
    batch_axis: int

    @property
    def batch_first(self) -> tuple[int, ...]:
        """Transpose permutation from the step graph's layout to batch-first."""
        axes = list(range(len(self.shape) + 1))
        return (self.batch_axis, *axes[: self.batch_axis], *axes[self.batch_axis + 1 :])

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape without the batch dimension, batch-first order (Triton's ``dims``)."""
        full = [*self.shape[: self.batch_axis], -1, *self.shape[self.batch_axis :]]
        return tuple(full[axis] for axis in self.batch_first[1:])

    @property
    def output(self) -> str:
        return f"{self.name}_out"


def wrap_step_graph(
    model: onnx.ModelProto, states: Iterable[StateLayout], output_shapes: dict[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """The step graph with batch-first state and START/READY controls (see the module docstring).

    ``output_shapes`` gives the non-batch dimensions of the other outputs, declared on the wrapper
    so that Triton's configuration and the graph agree on fixed sizes.
    """
    states = tuple(states)
    state_names = {name for s in states for name in (s.name, s.output)}
    step = onnx.GraphProto()
    step.CopyFrom(model.graph)
    _rename(step, {name: name + _INNER for name in state_names})
    outputs = [v for v in step.output if v.name not in {n + _INNER for n in state_names}]
    for value in outputs:
        _set_shape(value, output_shapes[value.name])
    before = [
        helper.make_node("Cast", [START], [_START_MASK], to=TensorProto.BOOL),
        helper.make_node("Cast", [READY], [_READY_MASK], to=TensorProto.BOOL),
    ]
    after = []
    initializers = [*step.initializer, numpy_helper.from_array(np.zeros((), np.float32), _ZERO)]
    for state in states:
        into, out_of, shape = _state_nodes(state)
        before += into
        after += out_of
        initializers.append(shape)
    inputs = [
        *(v for v in step.input if v.name not in {n + _INNER for n in state_names}),
        *(_value(s.name, s) for s in states),
        helper.make_tensor_value_info(START, TensorProto.INT32, ["batch", 1]),
        helper.make_tensor_value_info(READY, TensorProto.INT32, ["batch", 1]),
    ]
    graph = helper.make_graph(
        [*before, *step.node, *after],
        step.name,
        inputs,
        [*outputs, *(_value(s.output, s) for s in states)],
        initializer=initializers,
        value_info=step.value_info,
    )
    wrapped = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    wrapped.producer_name = "ssamba-export triton"
    onnx.checker.check_model(wrapped)
    return wrapped


def _state_nodes(state: StateLayout) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto], TensorProto]:
    """Nodes before the step graph (reset on START, to the graph's layout), nodes after it (to
    batch-first, keep the old state unless READY), and the constant shape of the control masks."""
    name, rank = state.name, len(state.shape) + 1
    local = f"triton/{name}"
    mask = numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), np.int64), f"{local}/mask_shape")
    inverse = tuple(int(axis) for axis in np.argsort(state.batch_first))
    into = [
        helper.make_node("Reshape", [_START_MASK, mask.name], [f"{local}/start"]),
        helper.make_node("Where", [f"{local}/start", _ZERO, name], [f"{local}/reset"]),
        _layout(f"{local}/reset", name + _INNER, inverse),
    ]
    out_of = [
        helper.make_node("Reshape", [_READY_MASK, mask.name], [f"{local}/ready"]),
        _layout(state.output + _INNER, f"{local}/new", state.batch_first),
        helper.make_node("Where", [f"{local}/ready", f"{local}/new", name], [state.output]),
    ]
    return into, out_of, mask


def _layout(source: str, target: str, perm: tuple[int, ...]) -> onnx.NodeProto:
    """A Transpose, or an Identity where the permutation changes nothing."""
    if perm == tuple(range(len(perm))):
        return helper.make_node("Identity", [source], [target])
    return helper.make_node("Transpose", [source], [target], perm=list(perm))


def _rename(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename tensors everywhere in ``graph``, subgraphs (If branches) included."""
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                _rename(subgraph, names)
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = names.get(value.name, value.name)


def _value(name: str, state: StateLayout) -> onnx.ValueInfoProto:
    """A batch-first float32 state tensor."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *state.dims])


def _set_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    """Declare ``value`` as (batch, *shape), replacing the exporter's symbolic sizes."""
    dims = value.type.tensor_type.shape.dim
    del dims[1:]
    for size in shape:
        dims.add().dim_value = size


def max_wrapper_difference(
    step: onnx.ModelProto,
    wrapped: onnx.ModelProto,
    states: Iterable[StateLayout],
    steps: int = 3,
    batch: int = 2,
) -> float:
    """Largest difference between the step graph and its wrapper over ``steps`` calls on random
    audio, each with its state fed back in its own layout (onnxruntime, CPU, one thread)."""
    original, wrapper = cpu_session(step), cpu_session(wrapped)
    states = tuple(states)
    state_in = {s.name: np.zeros((batch, *s.dims), np.float32) for s in states}  # batch-first
    controls = {START: np.ones((batch, 1), np.int32), READY: np.ones((batch, 1), np.int32)}
    chunk = original.get_inputs()[0].shape[1]
    rng = np.random.default_rng(0)
    worst = 0.0
    for index in range(steps):
        pcm = (0.1 * rng.standard_normal((batch, chunk))).astype(np.float32)
        controls[START][:] = index == 0
        step_state = {s.name: np.transpose(state_in[s.name], np.argsort(s.batch_first)) for s in states}
        theirs = run_outputs(original, {"pcm": pcm, **step_state})
        ours = run_outputs(wrapper, {"pcm": pcm, **state_in, **controls})
        for state in states:
            theirs[state.output] = np.transpose(theirs[state.output], state.batch_first)
            state_in[state.name] = ours[state.output]
        worst = max(worst, *(float(np.abs(ours[name] - value).max()) for name, value in theirs.items()))
    return worst


def cpu_session(model: onnx.ModelProto):  # noqa: ANN201 (onnxruntime's type)
    """An onnxruntime session on one CPU thread, for the exporter's checks of a graph in memory."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_outputs(session, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # noqa: ANN001 (onnxruntime's type)
    """Every output of one call, by name."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))
