"""Checkpoints: safetensors + JSON round trip, atomic writes, clear errors, strict official import."""

import json
import pickle

import pytest
import torch

from ssamba_stream.errors import CheckpointError
from ssamba_stream.model.base import resize_pos_embed
from ssamba_stream.model.checkpoint import (
    import_official,
    import_official_state,
    load_model,
    save_model,
    write_directory_atomically,
)
from ssamba_stream.model.registry import build_model

from official_ssamba_keys import official_state_dict

TINY_DEPTH = 4  # official layout at a smaller depth keeps the tests fast; depth-24 key names are covered too


def _kws(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("ssamba-kws", depth=2, num_classes=3, labels=["yes", "no", "_silence_"]).eval()


def test_round_trip_is_exact(tmp_path):
    model = _kws()
    save_model(model, tmp_path / "ckpt", metadata={"step": 7})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["metadata"] == {"step": 7} and document["config"]["labels"] == ["yes", "no", "_silence_"]
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes()[:1] != b"\x80"  # not a pickle


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "ckpt"
    save_model(_kws(0), target)
    save_model(_kws(1), target)
    assert torch.equal(load_model(target).mlp_head[1].weight, _kws(1).mlp_head[1].weight)
    with pytest.raises(TypeError):  # a failure half-way through writing the new files
        write_directory_atomically(target, {"config.json": b"{}", "model.safetensors": None})
    assert torch.equal(load_model(target).mlp_head[1].weight, _kws(1).mlp_head[1].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        load_model(tmp_path / "model.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(tmp_path / "empty")
    save_model(_kws(), tmp_path / "ok")
    bad_json = tmp_path / "bad_json"
    save_model(_kws(), bad_json)
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is corrupt"):
        load_model(bad_json)
    foreign = tmp_path / "foreign"
    save_model(_kws(), foreign)
    (foreign / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not an ssamba-stream checkpoint"):
        load_model(foreign)
    truncated = tmp_path / "truncated"
    save_model(_kws(), truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_model(truncated)


def test_load_rejects_weights_of_another_model(tmp_path):
    save_model(_kws(), tmp_path / "small")
    bigger = build_model("ssamba-kws", depth=2, num_classes=5)
    (tmp_path / "small" / "config.json").write_text(
        json.dumps(
            {"format": "ssamba-stream/checkpoint-v1", "config": bigger.config.to_dict(), "metadata": {}}
        )
    )
    with pytest.raises(
        CheckpointError, match=r"'mlp_head.1.weight' has shape \(3, 96\), the model expects \(5, 96\)"
    ):
        load_model(tmp_path / "small")


def test_official_names_cover_24_layers():
    model, report = import_official_state(official_state_dict(192, 24, task="pretrain"))
    assert model.config.depth == 24 and model.config.grid == (8, 64) and model.config.ssl_heads
    assert len(report.loaded) == len(model.state_dict())
    assert sorted(report.ignored) == ["p_input_fdim", "p_input_tdim", "v.head.bias", "v.head.weight"]


def test_official_pretrained_import_copies_every_tensor(tmp_path):
    official = official_state_dict(192, TINY_DEPTH, task="pretrain", seed=3)
    path = tmp_path / "amba_tiny_400.pth"
    torch.save(official, path)
    model, report = import_official(path)
    config = model.config
    assert (config.embed_dim, config.depth, config.target_length, config.pair_layers) == (
        192,
        TINY_DEPTH,
        1024,
        True,
    )
    ours = model.state_dict()
    for key, value in official.items():
        short = key.removeprefix("module.")
        if short in report.ignored:
            continue
        assert torch.equal(ours[short], value), key
    assert not report.initialised and not report.resized


def test_official_finetuned_import_with_overlapping_patches():
    official = official_state_dict(
        192, TINY_DEPTH, task="ft_avgtok", fstride=10, tstride=10, input_tdim=128, n_classes=35, seed=1
    )
    model, report = import_official_state(official, fstride=10, tstride=10)
    assert model.config.grid == (12, 12) and model.config.num_classes == 35 and not model.config.ssl_heads
    assert report.ignored == ["v.head.weight", "v.head.bias"]
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 128, 128))
    assert logits.shape == (2, 35) and torch.isfinite(logits).all()


def test_official_import_for_finetuning_resizes_and_reports():
    official = official_state_dict(192, TINY_DEPTH, task="pretrain")
    model, report = import_official_state(official, target_length=128, num_classes=12, ssl_heads=False)
    assert report.resized == ["v.pos_embed"]
    assert sorted(report.initialised) == [
        "mlp_head.0.bias",
        "mlp_head.0.weight",
        "mlp_head.1.bias",
        "mlp_head.1.weight",
    ]
    assert "mask_embed" in report.ignored and "cpredlayer.2.weight" in report.ignored
    expected = resize_pos_embed(official["module.v.pos_embed"], 1, (8, 64), (8, 8))
    assert torch.equal(model.v.pos_embed.detach(), expected)
    assert "resized: v.pos_embed" in report.summary()


def test_official_import_rejects_unknown_missing_and_misshapen_keys():
    official = official_state_dict(192, TINY_DEPTH, task="ft_avgtok", input_tdim=128, n_classes=10)
    extra = {**official, "module.v.layers.0.mixer.gamma": torch.ones(192)}
    with pytest.raises(CheckpointError, match="'module.v.layers.0.mixer.gamma' is not part of"):
        import_official_state(extra)
    missing = {k: v for k, v in official.items() if k != "module.v.layers.2.mixer.D_b"}
    with pytest.raises(CheckpointError, match="needs 'module.v.layers.2.mixer.D_b'"):
        import_official_state(missing)
    misshapen = {**official, "module.v.layers.1.mixer.x_proj_b.weight": torch.zeros(40, 384)}
    with pytest.raises(CheckpointError, match=r"x_proj_b.weight' has shape \(40, 384\)"):
        import_official_state(misshapen)
    with pytest.raises(CheckpointError, match="patch_embed.proj.weight' is missing"):
        import_official_state({"module.something": torch.zeros(1)})


def test_official_reader_refuses_pickled_code_and_non_checkpoints(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"module.v.x": Payload()}))
    with pytest.raises(CheckpointError, match="not a readable weights-only PyTorch checkpoint"):
        import_official(evil)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable weights-only"):
        import_official(text)
    with pytest.raises(CheckpointError, match="not found"):
        import_official(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="import_official"):
        load_model(evil)


def test_ssast_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("ssast-tiny", depth=2, num_classes=4).eval()
    save_model(model, tmp_path / "ssast")
    loaded = load_model(tmp_path / "ssast").eval()
    assert type(loaded).__name__ == "SSAST" and loaded.config == model.config
    fbank = torch.randn(1, 128, 128)
    assert torch.equal(loaded(fbank), model(fbank))
