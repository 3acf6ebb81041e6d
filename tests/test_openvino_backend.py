"""The OpenVINO backend (ssamba_stream/runtime/openvino_backend.py) against onnxruntime on the bundled graph."""

import importlib.util

import numpy as np
import pytest

from ssamba_stream.runtime.backends import make_backend
from ssamba_stream.runtime.openvino_backend import PART_SIZES, batch_parts
from ssamba_stream.runtime.spec import BATCH, load_spec
from ssamba_stream.spotter import resolve_model

NO_OPENVINO = importlib.util.find_spec("openvino") is None


def test_a_call_is_split_into_compiled_sizes_without_padding():
    for count in range(1, 80):
        parts = batch_parts(count)
        assert sum(parts) == count and set(parts) <= set(PART_SIZES)
        assert len(parts) <= count // 16 + 4 and parts == sorted(parts, reverse=True)
    assert batch_parts(37) == [16, 16, 4, 1]


@pytest.mark.skipif(NO_OPENVINO, reason="pip install 'ssamba-stream[openvino]'")
@pytest.mark.parametrize("count", [1, 6, 37])
def test_openvino_steps_match_onnxruntime(count):
    path = resolve_model(None)
    spec = load_spec(path)
    reference, fused = make_backend("onnxruntime", path, spec, 1), make_backend("openvino", path, spec, 1)
    rng = np.random.default_rng(count)
    inputs = {"pcm": (rng.standard_normal((count, spec.chunk_samples)) * 0.1).astype(np.float32)}
    for state in spec.state:
        zeros = state.zeros(count)
        inputs[state.name] = (rng.standard_normal(zeros.shape) * 0.01).astype(zeros.dtype)
    expected, got = reference.run(inputs), fused.run(inputs)
    assert got.keys() >= expected.keys()
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(
            got[name], value, atol=1e-5 if name == "posteriors" else 1e-4, err_msg=name
        )
    # Each stream's rows are its own: stream 0 alone gives what it got in the batch.
    alone = fused.run(
        {name: value[:1] if name == "pcm" else _first(value, spec, name) for name, value in inputs.items()}
    )
    np.testing.assert_allclose(alone["posteriors"][0], got["posteriors"][0], atol=1e-6)


def _first(value: np.ndarray, spec, name: str) -> np.ndarray:
    axis = next(s for s in spec.state if s.name == name).shape.index(BATCH)
    return np.take(value, [0], axis=axis)
