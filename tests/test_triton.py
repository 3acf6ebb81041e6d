"""`ssamba-export triton`: a Triton model repository with the sequence batcher and implicit state.

The config is read back with a small text-format parser and checked against the graph it ships;
the wrapped graph (batch-first state, START/READY) is run against the bundled step graph. A real
tritonserver runs only where one with the onnxruntime backend is installed.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from ssamba_export.triton import write_repository
from ssamba_export.triton_graph import READY, START, StateLayout, max_wrapper_difference
from ssamba_stream.runtime.session import StreamingSession
from ssamba_stream.runtime.spec import BATCH, StreamModelSpec, file_sha256, load_spec
from ssamba_stream.spotter import DEFAULT_MODEL

TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32"}


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format to nested dicts; every field becomes a list (repeated or not)."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)

    def value(token: str) -> object:
        if token.startswith('"'):
            return json.loads(token)
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        return {"true": True, "false": False}.get(token, token)

    def message(at: int) -> tuple[dict, int]:
        fields: dict[str, list] = {}
        while at < len(tokens) and tokens[at] != "}":
            key = tokens[at]
            at += 2 if tokens[at + 1] == ":" else 1
            items = []
            if tokens[at] == "[":
                at += 1
                while tokens[at] != "]":
                    if tokens[at] == "{":
                        item, at = message(at + 1)
                        items.append(item)
                    elif tokens[at] != ",":
                        items.append(value(tokens[at]))
                    at += 1
            elif tokens[at] == "{":
                item, at = message(at + 1)
                items.append(item)
            else:
                items.append(value(tokens[at]))
            fields.setdefault(key, []).extend(items)
            at += 1
        return fields, at

    return message(0)[0]


def graph_tensors(model: onnx.ModelProto) -> dict[str, tuple[str, list[int | str]]]:
    """name -> (Triton data type, dims after the batch) for every graph input and output."""
    out = {}
    for v in (*model.graph.input, *model.graph.output):
        t = v.type.tensor_type
        out[v.name] = (TYPES[t.elem_type], [d.dim_value or d.dim_param for d in t.shape.dim])
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "models"
    write_repository(DEFAULT_MODEL, root, max_batch=4)
    return root


def test_repository_layout(repo):
    model = repo / "kws12"
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        "kws12", "kws12/1", "kws12/1/model.onnx", "kws12/config.pbtxt", "kws12/labels.txt",
    ]  # fmt: skip
    assert (model / "labels.txt").read_text().split() == list(load_spec(DEFAULT_MODEL).labels)


def test_config_pairs_every_state_with_the_graphs_real_tensors(repo):
    config = parse_pbtxt((repo / "kws12" / "config.pbtxt").read_text())
    graph = onnx.load(repo / "kws12" / "1" / "model.onnx")
    tensors = graph_tensors(graph)
    assert config["name"] == ["kws12"] and config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [4]
    batching = config["sequence_batching"][0]
    assert batching["oldest"][0]["max_candidate_sequences"][0] > 0
    states = batching["state"]
    spec = load_spec(DEFAULT_MODEL)
    assert [s["input_name"][0] for s in states] == [t.name for t in spec.state]
    for state in states:
        for name in (state["input_name"][0], state["output_name"][0]):
            dtype, dims = tensors[name]
            assert dims[0] == BATCH, f"{name}: Triton's implicit state needs the batch first"
            assert state["data_type"] == [dtype] and state["dims"] == dims[1:]
        assert state["output_name"] == [state["input_name"][0] + "_out"]
        initial = state["initial_state"][0]
        assert initial["zero_data"] == [True] and initial["dims"] == state["dims"]
    for control, kind in ((START, "CONTROL_SEQUENCE_START"), (READY, "CONTROL_SEQUENCE_READY")):
        (entry,) = [c for c in batching["control_input"] if c["name"] == [control]]
        assert entry["control"][0]["kind"] == [kind] and entry["control"][0]["int32_false_true"] == [0, 1]
        assert tensors[control] == ("TYPE_INT32", [BATCH, 1])
    # everything the graph takes or gives is a config input/output, a control or a state
    listed = {e["name"][0]: (e["data_type"][0], e["dims"]) for e in (*config["input"], *config["output"])}
    assert listed == {"pcm": ("TYPE_FP32", [2560]), "posteriors": ("TYPE_FP32", [12]),
                      "logits": ("TYPE_FP32", [12]), "features": ("TYPE_FP32", [8, 96])}  # fmt: skip
    for name, (dtype, dims) in listed.items():
        assert tensors[name] == (dtype, [BATCH, *dims])
    paired = {n for s in states for n in (s["input_name"][0], s["output_name"][0])}
    assert set(tensors) == set(listed) | paired | {START, READY}


def layouts() -> tuple[StateLayout, ...]:
    return tuple(
        StateLayout(s.name, tuple(d for d in s.shape if d != BATCH), s.shape.index(BATCH))
        for s in load_spec(DEFAULT_MODEL).state
    )


def test_wrapped_graph_streams_like_the_step_graph(repo):
    wrapped = onnx.load(repo / "kws12" / "1" / "model.onnx")
    difference = max_wrapper_difference(onnx.load(DEFAULT_MODEL), wrapped, layouts(), steps=6, batch=3)
    assert difference <= 1e-6


def test_start_resets_and_not_ready_keeps_the_state(repo):
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / "kws12" / "1" / "model.onnx"))
    states = layouts()
    rng = np.random.default_rng(3)
    pcm = (0.1 * rng.standard_normal((2, 2560))).astype(np.float32)
    noise = {s.name: rng.standard_normal((2, *s.dims)).astype(np.float32) for s in states}
    zeros = {s.name: np.zeros((2, *s.dims), np.float32) for s in states}
    ones = np.ones((2, 1), np.int32)
    names = [o.name for o in session.get_outputs()]

    def run(state: dict[str, np.ndarray], start: int, ready: int) -> dict[str, np.ndarray]:
        feed = {"pcm": pcm, **state, START: start * ones, READY: ready * ones}
        return dict(zip(names, session.run(names, feed), strict=True))

    fresh, reset = run(zeros, 1, 1), run(noise, 1, 1)
    for name in names:
        np.testing.assert_array_equal(reset[name], fresh[name])
    idle = run(noise, 0, 0)
    for state in states:
        np.testing.assert_array_equal(idle[state.output], noise[state.name])


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssamba_export.cli", "triton", *args], capture_output=True, text=True
    )


def text_file(folder: Path) -> Path:
    path = folder / "notes.onnx"
    path.write_text("not a graph")
    return path


def stateless_model(folder: Path) -> Path:
    """A valid ONNX graph with a valid sidecar that names no state."""
    path = folder / "plain.onnx"
    pcm = onnx.helper.make_tensor_value_info("pcm", onnx.TensorProto.FLOAT, [BATCH, 2560])
    out = onnx.helper.make_tensor_value_info("posteriors", onnx.TensorProto.FLOAT, [BATCH, 2560])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["pcm"], ["posteriors"])], "g", [pcm], [out]
    )
    onnx.save(onnx.helper.make_model(graph), path)
    spec = StreamModelSpec(("a",), 16000, 8, 2560, "softmax", (), fingerprint=file_sha256(path))
    path.with_suffix(".json").write_text(json.dumps(spec.to_json()))
    return path


def fixed_batch_model(folder: Path) -> Path:
    """The bundled graph, its sidecar saying it was exported for one stream."""
    path = folder / "fixed.onnx"
    shutil.copy(DEFAULT_MODEL, path)
    document = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**document, "batch": 1}))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (text_file, "is not an ONNX model"),
        (stateless_model, "carries no state"),
        (fixed_batch_model, "--batch 0"),
        (lambda d: d / "missing.onnx", "not found"),
    ],
)
def test_bad_input_is_one_line(tmp_path, make, message):
    result = export_cli(str(make(tmp_path)), "-o", str(tmp_path / "repo"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and not (tmp_path / "repo").exists()


def test_non_empty_repository_needs_force(tmp_path):
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    result = export_cli(str(DEFAULT_MODEL), "-o", str(repo))
    assert result.returncode == 2 and "--force" in result.stderr and "Traceback" not in result.stderr
    forced = export_cli(str(DEFAULT_MODEL), "-o", str(repo), "--force", "--name", "kws")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["kws", "other"]


def triton_skip_reason() -> str | None:
    """Why no tritonserver with the onnxruntime backend can run here, or None."""
    if shutil.which("tritonserver") is None:
        return "no tritonserver on PATH (pip's nvidia-pytriton ships only the python backend)"
    backends = Path(os.environ.get("TRITON_BACKEND_DIR", "/opt/tritonserver/backends"))
    if not (backends / "onnxruntime").is_dir():
        return f"tritonserver has no onnxruntime backend in {backends} (set TRITON_BACKEND_DIR)"
    try:
        import tritonclient.http  # noqa: F401
    except ImportError:
        return "tritonclient[http] is not installed"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(triton_skip_reason() is not None, reason=str(triton_skip_reason()))
def test_tritonserver_streams_like_the_onnxruntime_session(repo, tmp_path):
    import tritonclient.http as http

    port = free_port()
    backends = os.environ.get("TRITON_BACKEND_DIR", "/opt/tritonserver/backends")
    server = subprocess.Popen(
        ["tritonserver", "--model-repository", str(repo), "--backend-directory", backends,
         "--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while not _ready(client, "kws12"):
            assert server.poll() is None and time.monotonic() < deadline, (
                tmp_path / "server.log"
            ).read_text()
            time.sleep(0.5)
        rng = np.random.default_rng(5)
        signals = [(0.1 * rng.standard_normal(2560 * 5)).astype(np.float32) for _ in range(3)]
        served = {k: [] for k in range(3)}
        for block in range(5):  # the streams interleaved, so the batcher keeps three states apart
            for k, signal in enumerate(signals):
                pcm = http.InferInput("pcm", [1, 2560], "FP32")
                pcm.set_data_from_numpy(signal[None, block * 2560 : (block + 1) * 2560])
                result = client.infer("kws12", [pcm], sequence_id=100 + k,
                                      sequence_start=block == 0, sequence_end=block == 4)  # fmt: skip
                served[k].append(result.as_numpy("posteriors")[0])
        for k, signal in enumerate(signals):
            local = StreamingSession(DEFAULT_MODEL).process_detailed(signal)["posteriors"][0]
            np.testing.assert_allclose(np.stack(served[k]), local, atol=1e-5)
    finally:
        server.terminate()
        server.wait(30)


def _ready(client, model: str) -> bool:  # noqa: ANN001 (tritonclient's type)
    try:
        return client.is_model_ready(model)
    except Exception:  # the server is still starting: connection refused
        return False
