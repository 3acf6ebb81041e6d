"""The onnxruntime-native backend: the step graph cut at its block scans, the scans in a compiled kernel."""

import json

import numpy as np
import onnx
import onnx.inliner
import pytest
import torch
from model_fixtures import KWS_LABELS, save_random_checkpoint

from ssamba_export.onnx_export import export_onnx
from ssamba_stream.model.block_scan import BlockScan, block_scan
from ssamba_stream.runtime import host_scan
from ssamba_stream.runtime.backends import BackendUnavailable, make_backend
from ssamba_stream.runtime.graph_split import HostCall, Segment, split_at_calls
from ssamba_stream.runtime.native_backend import SCAN_FUNCTION, SCAN_ROLES, SPLIT_FROM_STREAMS, _probe
from ssamba_stream.runtime.spec import BATCH, ModelFileError, file_sha256, load_spec, sidecar_path
from ssamba_stream.spotter import resolve_model

KERNEL = host_scan.host_block_scan()
needs_kernel = pytest.mark.skipif(isinstance(KERNEL, str), reason=f"no native block scan here: {KERNEL}")


@needs_kernel
@pytest.mark.parametrize(
    "length,d,dt_offset",
    [
        (8, 192, 0.0),  # the bundled model's block, compiled for its length
        (5, 13, 0.0),  # any length; 13 channels: one vector and a scalar tail
        (16, 13, 60.0),  # decays far below float's range: the exponent's clamp
    ],
)
def test_kernel_equals_the_torch_block_scan(length, d, dt_offset):
    inputs = host_scan.random_scan_inputs(length, 3, length, 16, d)
    inputs["dt"] += dt_offset
    y, last = KERNEL(**inputs)
    y_ref, last_ref = BlockScan()(*(torch.from_numpy(inputs[role]) for role in SCAN_ROLES))
    np.testing.assert_allclose(y, y_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, last_ref.numpy(), rtol=1e-5, atol=1e-5)


def test_the_bundled_graph_splits_into_segments_and_one_call_per_layer():
    model = onnx.load(str(resolve_model(None)))
    split = split_at_calls(model, SCAN_FUNCTION, SCAN_ROLES)
    kinds = [type(part) for part in split.parts]
    depth = json.loads(sidecar_path(resolve_model(None)).read_text())["model"]["depth"]
    assert kinds == [Segment, HostCall] * depth + [Segment]
    # Every value a part reads was made before it: by the graph's inputs, a constant, or an earlier part.
    known = {v.name for v in model.graph.input} | set(split.constants)
    for part in split.parts:
        reads = part.inputs.values() if isinstance(part, HostCall) else part.inputs
        assert set(reads) <= known
        known |= set(part.outputs)
    assert set(split.outputs) <= known
    # Each standard node of the graph is in exactly one segment.
    in_segments = [
        n.name
        for p in split.parts
        if isinstance(p, Segment)
        for n in p.model.graph.node
        if n.op_type != "Constant"
    ]
    wanted = [n.name for n in model.graph.node if n.op_type not in ("Constant", SCAN_FUNCTION)]
    assert sorted(in_segments) == sorted(wanted)
    # Every model handed to onnxruntime keeps the graph's IR version (the installed onnx may write a
    # newer one than the installed onnxruntime reads: onnx 1.23.2 writes IR 14, onnxruntime 1.23.2 reads 11).
    probe = _probe(split.function, split.parts[1], model.ir_version)
    assert {p.model.ir_version for p in split.parts if isinstance(p, Segment)} | {probe.ir_version} == {
        model.ir_version
    }


def test_a_graph_that_defines_the_function_but_never_calls_it_is_refused():
    model = onnx.load(str(resolve_model(None)))
    inlined = onnx.inliner.inline_local_functions(model)
    inlined.functions.append(model.functions[0])
    with pytest.raises(ModelFileError, match="never calls it"):
        split_at_calls(inlined, SCAN_FUNCTION, SCAN_ROLES)


def _random_inputs(spec, count: int, rng) -> dict[str, np.ndarray]:
    inputs = {"pcm": (rng.standard_normal((count, spec.chunk_samples)) * 0.1).astype(np.float32)}
    for state in spec.state:
        zeros = state.zeros(count)
        inputs[state.name] = (rng.standard_normal(zeros.shape) * 0.01).astype(zeros.dtype)
    return inputs


@needs_kernel
@pytest.mark.parametrize("count", [1, SPLIT_FROM_STREAMS, 7])  # 1: the whole graph, one session
def test_steps_match_onnxruntime_with_the_state_carried(count):
    path = resolve_model(None)
    spec = load_spec(path)
    reference, native = (
        make_backend("onnxruntime", path, spec, 1),
        make_backend("onnxruntime-native", path, spec, 1),
    )
    rng = np.random.default_rng(count)
    inputs = _random_inputs(spec, count, rng)
    expected_state = got_state = {name: value for name, value in inputs.items() if name != "pcm"}
    for _ in range(4):
        pcm = (rng.standard_normal((count, spec.chunk_samples)) * 3000).astype(np.float32)
        expected = reference.run({"pcm": pcm, **expected_state})
        got = native.run({"pcm": pcm, **got_state})
        for name, value in expected.items():
            assert got[name].shape == value.shape, name
            np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=1e-5, err_msg=name)
        expected_state = {s.name: expected[f"{s.name}_out"] for s in spec.state}
        got_state = {s.name: got[f"{s.name}_out"] for s in spec.state}


def _rewrite_graph(path, model: onnx.ModelProto, target):
    """``model`` saved as ``target`` with ``path``'s sidecar, fingerprinted for it."""
    onnx.save(model, str(target))
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["fingerprint"] = file_sha256(target)
    sidecar_path(target).write_text(json.dumps(sidecar))
    return target


@needs_kernel
def test_a_graph_without_scan_functions_is_refused_in_one_line(tmp_path):
    path = resolve_model(None)
    inlined = _rewrite_graph(
        path, onnx.inliner.inline_local_functions(onnx.load(str(path))), tmp_path / "old.onnx"
    )
    with pytest.raises(ModelFileError) as error:
        make_backend("onnxruntime-native", inlined, load_spec(inlined), 1)
    message = str(error.value)
    assert "\n" not in message and "no BlockScan function" in message and "re-export" in message
    make_backend("onnxruntime", inlined, load_spec(inlined), 1)  # the graph itself is fine


@needs_kernel
def test_a_function_that_computes_something_else_is_refused(tmp_path, monkeypatch):
    # The scan without its softplus: every input used, the shapes right, the values not.
    def without_softplus(self, u, dt, A, B, C, D, z, initial_state):
        return block_scan(u, dt, A, B, C, D, z, initial_state)

    monkeypatch.setattr(BlockScan, "forward", without_softplus)
    path = tmp_path / "other.onnx"
    export_onnx(save_random_checkpoint(tmp_path, KWS_LABELS), path, batch=None)
    with pytest.raises(ModelFileError, match="does not compute the block scan"):
        make_backend("onnxruntime-native", path, load_spec(path), 1)


def test_without_a_compiler_the_backend_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    host_scan.host_block_scan.cache_clear()
    try:
        path = resolve_model(None)
        with pytest.raises(BackendUnavailable, match="cannot be built here .*install g\\+\\+"):
            make_backend("onnxruntime-native", path, load_spec(path), 1)
    finally:
        host_scan.host_block_scan.cache_clear()


@needs_kernel
def test_the_kernel_is_compiled_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    host_scan.host_block_scan.cache_clear()
    try:
        assert not isinstance(host_scan.host_block_scan(), str)
        libraries = list(tmp_path.glob("ssamba_stream/host-*/block_scan-*.so"))
        assert len(libraries) == 1 and not list(libraries[0].parent.glob("tmp*"))  # no scratch left
        stamp = libraries[0].stat().st_mtime_ns
        host_scan.host_block_scan.cache_clear()
        assert not isinstance(host_scan.host_block_scan(), str)
        assert libraries[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        host_scan.host_block_scan.cache_clear()


def test_each_stream_in_a_call_is_independent():
    # Five streams go through the split graph, one alone through the whole graph: the same rows.
    if isinstance(KERNEL, str):
        pytest.skip(KERNEL)
    path = resolve_model(None)
    spec = load_spec(path)
    native = make_backend("onnxruntime-native", path, spec, 1)
    inputs = _random_inputs(spec, 5, np.random.default_rng(3))
    together = native.run(inputs)
    axis = {s.name: s.shape.index(BATCH) for s in spec.state}
    third = {name: np.take(value, [2], axis=axis.get(name, 0)) for name, value in inputs.items()}
    np.testing.assert_allclose(native.run(third)["posteriors"][0], together["posteriors"][2], atol=1e-6)
