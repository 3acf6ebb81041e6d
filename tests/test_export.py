"""The streaming export: ONNX step graph + sidecar, the runtime session, and the central equality.

Central test (design §5): 30 s of speech and noise fed in random chunk sizes through the exported
step gives the PyTorch offline block-structured forward's logits within 1e-4.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import KWS_LABELS as LABELS
from model_fixtures import save_random_checkpoint

from ssamba_export.onnx_export import export_onnx
from ssamba_export.verify import max_logit_difference, stream_in_random_chunks
from ssamba_stream.errors import UserError
from ssamba_stream.model.checkpoint import save_model
from ssamba_stream.model.registry import build_model
from ssamba_stream.runtime.backends import OnnxRuntimeBackend, backend_names, register_backend
from ssamba_stream.runtime.session import StreamingSession
from ssamba_stream.runtime.spec import ModelFileError, file_sha256, write_detector_defaults

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt"), LABELS)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "kws.onnx"
    export_onnx(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def stream_audio(speech_16k) -> np.ndarray:
    """30 s: speech, white noise at several levels, digital silence, speech mixed with noise."""
    rng = np.random.default_rng(1)
    parts, total = [], 0
    while total < 30 * 16000:
        speech = speech_16k * rng.uniform(0.2, 1.0)
        noise = rng.standard_normal(int(rng.uniform(0.3, 2.0) * 16000)).astype(
            np.float32
        ) * 10 ** rng.uniform(-3, -1)
        silence = np.zeros(int(rng.uniform(0.1, 1.0) * 16000), dtype=np.float32)
        mixed = speech + 0.02 * rng.standard_normal(speech.size).astype(np.float32)
        parts += [speech, noise, silence, mixed]
        total = sum(p.size for p in parts)
    return np.concatenate(parts)[: 30 * 16000].astype(np.float32)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_streamed_logits_equal_offline(exported, checkpoint, stream_audio, backend):
    difference, blocks = max_logit_difference(exported, checkpoint, stream_audio, backend=backend, seed=3)
    assert blocks == 30 * 16000 // 2560
    assert difference <= 1e-4


@pytest.mark.parametrize("scan", ["segsum", "cumsum"])
def test_other_scan_forms_and_free_batch_are_equal_too(checkpoint, stream_audio, tmp_path, scan):
    path = tmp_path / f"{scan}.onnx"
    export_onnx(checkpoint, path, scan=scan, block=4, batch=None)
    audio = stream_audio[: 8 * 16000]
    difference, blocks = max_logit_difference(path, checkpoint, audio, seed=5)
    assert blocks == 8 * 16000 // 1280 and difference <= 1e-4


def test_attention_head_streams_equal_to_offline(stream_audio, tmp_path):
    checkpoint = save_random_checkpoint(tmp_path, LABELS, seed=4, head_pool="attention")
    path = tmp_path / "attention.onnx"
    export_onnx(checkpoint, path)
    assert json.loads(path.with_suffix(".json").read_text())["head_pool"] == "attention"
    audio = stream_audio[: 8 * 16000]  # the window fills after 0.5 s: its start and steady state
    difference, blocks = max_logit_difference(path, checkpoint, audio, seed=6)
    assert blocks == 8 * 16000 // 2560 and difference <= 1e-4


def test_sidecar_describes_graph_and_state(exported, checkpoint):
    spec = json.loads(exported.with_suffix(".json").read_text())
    assert spec["labels"] == LABELS and spec["sample_rate"] == 16000
    assert spec["block_tokens"] == 8 and spec["chunk_samples"] == 2560
    shapes = {s["name"]: s["shape"] for s in spec["state"]}
    assert shapes == {
        "leftover": ["batch", 240],
        "conv_state": [8, "batch", 192, 3],
        "ssm_state": [8, "batch", 192, 16],
        "head_window": ["batch", 25, 96],
        "head_count": ["batch", 1],
    }
    assert spec["fingerprint"] == file_sha256(exported)
    assert spec["source"]["sha256"] == file_sha256(checkpoint / "model.safetensors")
    assert spec["detector"]["ignore"] == ["_silence_", "_unknown_"]
    import onnx

    graph = onnx.load(str(exported))
    assert graph.opset_import[0].version >= 17
    assert [i.name for i in graph.graph.input] == ["pcm", *shapes]


def test_batched_streams_equal_separate_sessions(checkpoint, exported, stream_audio, tmp_path):
    free = tmp_path / "free.onnx"
    export_onnx(checkpoint, free, batch=None)
    a, b = stream_audio[:48000], stream_audio[100000:148000]
    batched = StreamingSession(free, streams=2).process(np.stack([a, b]))
    for row, audio in enumerate((a, b)):
        np.testing.assert_allclose(batched[row], StreamingSession(exported).process(audio), atol=1e-5)
    assert StreamingSession(free, streams=3).process(np.zeros((3, 2560), np.float32)).shape == (3, 1, 12)
    with pytest.raises(UserError, match="exported for 1 stream"):
        StreamingSession(exported, streams=2)


def test_buffering_snapshot_and_restore(exported, stream_audio):
    session = StreamingSession(exported)
    assert session.process(stream_audio[:1000]).shape == (0, 12)
    first = session.process(stream_audio[1000:40000])
    assert first.shape == (40000 // 2560, 12) and session.blocks == first.shape[0]
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-5)
    snapshot = session.snapshot()
    after = session.process(stream_audio[40000:80000])
    session.restore(snapshot)
    np.testing.assert_array_equal(session.process(stream_audio[40000:80000]), after)
    session.reset()
    np.testing.assert_allclose(session.process(stream_audio[:40000]), first, atol=1e-6)
    assert not np.allclose(after[:3], first[:3], atol=1e-3)


def test_bad_input_is_refused_and_the_stream_survives(exported, stream_audio):
    session = StreamingSession(exported)
    session.process(stream_audio[:5000])
    reference = StreamingSession(exported)
    reference.process(stream_audio[:5000])
    bad_calls = [
        ((stream_audio[:100] * 32767).astype(np.int16), {}, "divide int16 PCM by 32768"),
        (stream_audio[:100].reshape(1, 1, 100), {}, r"shape \(samples,\)"),
        (np.stack([stream_audio[:100]] * 2), {}, "one row per stream"),
        (stream_audio[:100], {"sample_rate": 44100}, "resample"),
        (np.full(100, np.nan, dtype=np.float32), {}, "NaN or Inf"),
    ]
    for pcm, kwargs, message in bad_calls:
        with pytest.raises(UserError, match=message):
            session.process(pcm, **kwargs)
    np.testing.assert_array_equal(
        session.process(stream_audio[5000:30000]), reference.process(stream_audio[5000:30000])
    )


def test_re_export_keeps_tuned_detector_defaults(checkpoint, tmp_path):
    """Re-exporting a checkpoint over its tuned export keeps the thresholds 'ssamba-export tune' chose."""
    out = tmp_path / "tuned.onnx"
    export_onnx(checkpoint, out)
    tuned = {
        **json.loads(out.with_suffix(".json").read_text())["detector"],
        "threshold": 0.97,
        "smoothing_blocks": 6,
    }
    write_detector_defaults(out, tuned)
    assert export_onnx(checkpoint, out).detector == tuned
    assert export_onnx(checkpoint, out, block=4).detector["threshold"] == 0.5  # another block: untuned again


def test_a_registered_backend_serves_sessions(exported, stream_audio):
    """A new backend is one class and one register_backend call: sessions and --backend find it."""

    class Counting(OnnxRuntimeBackend):
        steps = 0

        def run(self, inputs):
            Counting.steps += 1
            return super().run(inputs)

    register_backend("counting-test", lambda path, spec, threads: Counting(path, spec, threads))
    assert "counting-test" in backend_names()
    audio = stream_audio[:16000]
    session = StreamingSession(exported, backend="counting-test")
    np.testing.assert_array_equal(session.process(audio), StreamingSession(exported).process(audio))
    assert Counting.steps == session.blocks > 0
    with pytest.raises(UserError, match="unknown backend 'nope': choose one of onnxruntime, .*counting-test"):
        StreamingSession(exported, backend="nope")


def test_model_file_errors(exported, checkpoint, tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        StreamingSession(tmp_path / "absent.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(exported.read_bytes())
    with pytest.raises(ModelFileError, match="sidecar"):
        StreamingSession(lonely)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(exported.read_bytes()[:5000])
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    corrupt.with_suffix(".json").write_text(json.dumps({**sidecar, "fingerprint": file_sha256(corrupt)}))
    with pytest.raises(ModelFileError, match="not a loadable ONNX graph"):
        StreamingSession(corrupt)
    bad_json = tmp_path / "bad_json.onnx"
    bad_json.write_bytes(exported.read_bytes())
    bad_json.with_suffix(".json").write_text("{")
    with pytest.raises(ModelFileError, match="corrupt"):
        StreamingSession(bad_json)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(
        torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(foreign), input_names=["x"], dynamo=False
    )
    foreign.with_suffix(".json").write_text(json.dumps({**sidecar, "fingerprint": file_sha256(foreign)}))
    with pytest.raises(ModelFileError, match="does not match its sidecar"):
        StreamingSession(foreign)


def test_a_sidecar_from_another_export_or_with_a_wrong_rate_is_refused(exported, checkpoint, tmp_path):
    """Another export's sidecar would relabel every event, a wrong rate would silence them: both are refused."""
    other = tmp_path / "other.onnx"
    export_onnx(checkpoint, other, block=4)
    mixed = tmp_path / "mixed.onnx"
    mixed.write_bytes(exported.read_bytes())
    mixed.with_suffix(".json").write_text(other.with_suffix(".json").read_text())
    with pytest.raises(ModelFileError, match="written for another graph than mixed.onnx"):
        StreamingSession(mixed)
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    mixed.with_suffix(".json").write_text(json.dumps({**sidecar, "sample_rate": 8000}))
    with pytest.raises(ModelFileError, match="says sample_rate 8000 but its model was trained at 16000 Hz"):
        StreamingSession(mixed)


def test_state_from_another_model_is_refused(exported, checkpoint, tmp_path):
    other = tmp_path / "other.onnx"
    export_onnx(checkpoint, other, block=4)
    snapshot = StreamingSession(other).snapshot()
    with pytest.raises(UserError, match="another model"):
        StreamingSession(exported).restore(snapshot)
    free = tmp_path / "free.onnx"
    export_onnx(checkpoint, free, batch=None)
    two = StreamingSession(free, streams=2).snapshot()
    with pytest.raises(UserError, match="same number of streams"):
        StreamingSession(free).restore(two)


def test_runtime_session_runs_without_torch(exported, stream_audio, tmp_path):
    np.save(tmp_path / "audio.npy", stream_audio[:30000])
    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "import numpy as np\n"
        "from ssamba_stream.runtime.session import StreamingSession\n"
        "out = StreamingSession(sys.argv[1]).process(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], out)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(exported), str(tmp_path / "audio.npy"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), StreamingSession(exported).process(stream_audio[:30000]), atol=1e-6
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from ssamba_export.cli import main; sys.argv = ['ssamba-export', *sys.argv[1:]]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_cli_exports_and_verifies(checkpoint, tmp_path):
    out = tmp_path / "cli.onnx"
    result = _cli("onnx", str(checkpoint), "--block", "4", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "block of 4 tokens = 1280 samples (80 ms)" in result.stdout and out.with_suffix(".json").is_file()
    assert "detector defaults untuned (threshold 0.5): tune them with 'ssamba-export tune" in result.stdout
    result = _cli("verify", str(out), "--checkpoint", str(checkpoint), "--seconds", "6")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: max |streamed - offline| logit difference")
    result = _cli("verify", str(out), "--checkpoint", str(checkpoint), "--seconds", "6", "--tolerance", "0")
    assert result.returncode == 1 and "FAILED" in result.stdout


def test_cli_errors_are_one_line(tmp_path, exported, checkpoint):
    cases = [
        (
            ("onnx", str(checkpoint), "--block", "0", "-o", str(tmp_path / "x.onnx")),
            "block must be a positive",
        ),
        (("onnx", str(tmp_path / "missing"), "-o", str(tmp_path / "x.onnx")), "not found"),
        (("onnx", str(tmp_path / "missing"), "-o", str(tmp_path / "x.txt")), "must end in .onnx"),
    ]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        cases.append((("trt", str(exported), "-o", str(tmp_path / "x.plan")), "TensorRT is not installed"))
    for args, message in cases:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_patch_model_cannot_be_exported(tmp_path):
    save_model(build_model("ssamba-tiny", depth=2, num_classes=2), tmp_path / "patch")
    with pytest.raises(UserError, match="only frame-token models"):
        export_onnx(tmp_path / "patch", tmp_path / "patch.onnx")


def _tensorrt_ready() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs TensorRT and an NVIDIA GPU")
@pytest.mark.parametrize("fp16,tolerance", [(False, 1e-3), (True, 2e-2)])
def test_tensorrt_engine_matches_offline(exported, checkpoint, stream_audio, tmp_path, fp16, tolerance):
    from ssamba_export.tensorrt_build import build_engine

    plan = build_engine(exported, tmp_path / f"kws-{fp16}.plan", fp16=fp16)
    difference, _ = max_logit_difference(plan, checkpoint, stream_audio, backend="tensorrt")
    assert difference <= tolerance


def test_random_chunks_cover_every_block(exported, stream_audio):
    logits = stream_in_random_chunks(StreamingSession(exported), stream_audio[:64000], seed=9)
    assert logits.shape == (64000 // 2560, 12) and np.isfinite(logits).all()
