"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from model_fixtures import KWS_LABELS, export_random_model

from ssamba_stream.runtime.host_scan import host_block_scan

from audio_fixtures import ESPEAK, SKIP_REASON, synthesize_speech


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    """About 6 s of espeak-ng English at 16 kHz, with pauses between words (float32, [-1, 1])."""
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    return synthesize_speech("Hey Marvin, turn on the lights. Stop, go, yes, no.", word_gap_10ms=20)


@pytest.fixture(scope="session")
def random_kws_model(tmp_path_factory):
    """(model.onnx path) of a random 12-keyword streaming model: fast to run, arbitrary events."""
    return export_random_model(tmp_path_factory.mktemp("random_kws"), KWS_LABELS)


@pytest.fixture(
    params=[
        "onnxruntime",
        pytest.param("openvino", marks=pytest.mark.skipif(
            importlib.util.find_spec("openvino") is None, reason="pip install 'ssamba-stream[openvino]'"
        )),
        pytest.param("onnxruntime-native", marks=pytest.mark.skipif(
            isinstance(host_block_scan(), str), reason="the native block scan needs g++"
        )),
    ]
)  # fmt: skip
def cpu_backend(request) -> str:
    """Each CPU backend the batching engine runs on (openvino where its extra is installed, the
    native scan where g++ is)."""
    return request.param
