"""Cut an ONNX graph at the calls of one local function, for a host that runs those calls itself.

The exported step graph keeps each layer's block scan as a call of the local function
``BlockScan`` (export/onnx_export.py). ``split_at_calls`` turns the graph into an alternating
sequence of ``Segment``s (standard-op subgraphs, each a model of its own for any ONNX runtime) and
``HostCall``s (one call each, its inputs named by role), so that running them in order with a
table of values computes what the whole graph computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .spec import ModelFileError


@dataclass(frozen=True)
class Segment:
    """Standard ops between two calls: ``model`` reads ``inputs`` and writes ``outputs``."""

    model: onnx.ModelProto
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class HostCall:
    """One call of the function: the value behind each role (in the function's input order), and
    its outputs in order."""

    inputs: dict[str, str]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class SplitGraph:
    """The parts in running order; ``constants`` are the values calls read from the graph's
    initializers and Constant nodes (a run's table starts from them and the graph's inputs);
    ``function`` is the definition the calls use (its output order is the exporter's)."""

    parts: tuple[Segment | HostCall, ...]
    constants: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    function: onnx.FunctionProto


def split_at_calls(model: onnx.ModelProto, function: str, roles: Sequence[str]) -> SplitGraph:
    """Split ``model`` at every call of the local function ``function``, whose formal inputs are
    named after ``roles`` (an exporter's ``u.55`` is role ``u``; one input whose name the exporter
    generated, as for a folded constant, takes the one role left)."""
    definition = next((f for f in model.functions if f.name == function), None)
    if definition is None:
        raise ModelFileError(
            f"the graph has no {function} function calls: re-export it with this version of ssamba-export"
        )
    role_of = _roles(definition, roles)
    graph = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        raise ModelFileError(
            "the graph has control-flow subgraphs, which the split does not handle: re-export it"
        )
    initializers = {t.name: t for t in graph.initializer}
    constant_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    types = _value_types(model)

    groups: list[list[onnx.NodeProto] | onnx.NodeProto] = [[]]
    for node in graph.node:
        if node.op_type == function and node.domain == definition.domain:
            groups += [node, []]
        elif node.op_type != "Constant":
            groups[-1].append(node)
    needed_later = _needed_after(groups, [o.name for o in graph.output])

    parts: list[Segment | HostCall] = []
    constants: dict[str, np.ndarray] = {}
    for index, group in enumerate(groups):
        if isinstance(group, onnx.NodeProto):
            inputs = {
                role_of[formal]: actual for formal, actual in zip(definition.input, group.input, strict=True)
            }
            for name in inputs.values():
                if name in initializers:
                    constants[name] = numpy_helper.to_array(initializers[name])
                elif name in constant_nodes:
                    constants[name] = numpy_helper.to_array(constant_nodes[name].attribute[0].t)
            parts.append(HostCall(inputs, tuple(group.output)))
        elif group:
            parts.append(
                _segment(group, needed_later[index], initializers, constant_nodes, types, model, index)
            )
    if not any(isinstance(part, HostCall) for part in parts):
        raise ModelFileError(f"the graph defines {function} but never calls it: re-export it")
    return SplitGraph(tuple(parts), constants, tuple(o.name for o in graph.output), definition)


def _roles(definition: onnx.FunctionProto, roles: Sequence[str]) -> dict[str, str]:
    """Formal input name -> role."""
    named = {formal: formal.split(".")[0] for formal in definition.input if formal.split(".")[0] in roles}
    unnamed = [formal for formal in definition.input if formal not in named]
    left = [role for role in roles if role not in named.values()]
    if len(unnamed) > 1 or len(left) != len(unnamed) or len(definition.input) != len(roles):
        raise ModelFileError(
            f"the graph's {definition.name} function has inputs {list(definition.input)}, not "
            f"{list(roles)}: re-export it with this version of ssamba-export"
        )
    return {**named, **dict(zip(unnamed, left, strict=True))}


def _needed_after(groups: list, graph_outputs: list[str]) -> list[set[str]]:
    """For each group, the values that later groups or the graph's outputs read."""
    needed, result = set(graph_outputs), []
    for group in reversed(groups):
        result.append(set(needed))
        for node in [group] if isinstance(group, onnx.NodeProto) else group:
            needed.update(name for name in node.input if name)
    return result[::-1]


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """The element type of every value the shape inference can name (shapes are left free)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: v.type for v in [*inferred.value_info, *inferred.input, *inferred.output]}


def _segment(
    nodes: list[onnx.NodeProto],
    needed_later: set[str],
    initializers: dict[str, onnx.TensorProto],
    constant_nodes: dict[str, onnx.NodeProto],
    types: dict[str, onnx.TypeProto],
    model: onnx.ModelProto,
    index: int,
) -> Segment:
    produced = {name for node in nodes for name in node.output}
    read = list(dict.fromkeys(name for node in nodes for name in node.input if name and name not in produced))
    constants = [constant_nodes[name] for name in read if name in constant_nodes]
    inputs = tuple(name for name in read if name not in initializers and name not in constant_nodes)
    outputs = tuple(name for node in nodes for name in node.output if name in needed_later)
    graph = helper.make_graph(
        [*constants, *nodes],
        f"{model.graph.name}_segment{index}",
        [_value_info(name, types) for name in inputs],
        [_value_info(name, types) for name in outputs],
        initializer=[initializers[name] for name in read if name in initializers],
    )
    segment = helper.make_model(
        graph, opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    )
    segment.ir_version = model.ir_version
    return Segment(segment, inputs, outputs)


def _value_info(name: str, types: dict[str, onnx.TypeProto]) -> onnx.ValueInfoProto:
    if name not in types or not types[name].HasField("tensor_type"):
        raise ModelFileError(f"the type of graph value {name!r} cannot be inferred: re-export the graph")
    return helper.make_tensor_value_info(name, types[name].tensor_type.elem_type, None)
