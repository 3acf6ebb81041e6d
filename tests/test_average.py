"""Checkpoint averaging (training/average.py): the weighted mean of real checkpoints, refused across configs."""

from __future__ import annotations

import pytest
import torch

from ssamba_stream.errors import CheckpointError
from ssamba_stream.model.checkpoint import load_model, save_model
from ssamba_stream.model.registry import build_model
from ssamba_training.average import average_checkpoints, main
from tests.model_fixtures import KWS_LABELS, save_random_checkpoint


def _two_checkpoints(tmp_path):
    return [
        save_random_checkpoint(tmp_path / name, KWS_LABELS, seed=seed) for name, seed in (("a", 1), ("b", 2))
    ]


def test_average_is_the_weighted_mean_of_every_weight(tmp_path):
    a, b = _two_checkpoints(tmp_path)
    out = average_checkpoints([a, b], tmp_path / "avg", weights=[3.0, 1.0])
    first, second, averaged = (
        load_model(a).state_dict(),
        load_model(b).state_dict(),
        load_model(out).state_dict(),
    )
    assert averaged.keys() == first.keys()
    for key, value in averaged.items():
        torch.testing.assert_close(value, 0.75 * first[key] + 0.25 * second[key], rtol=1e-6, atol=1e-7)
    assert not torch.equal(averaged["mlp_head.1.weight"], first["mlp_head.1.weight"])


def test_an_averaged_model_runs_and_records_its_sources(tmp_path):
    a, b = _two_checkpoints(tmp_path)
    out = average_checkpoints([a, b], tmp_path / "avg")
    model = load_model(out).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 100, 128))
    assert logits.shape == (1, len(KWS_LABELS)) and torch.isfinite(logits).all()
    assert (out / "config.json").read_text().count(str(a)) == 1


def test_checkpoints_of_another_config_are_refused(tmp_path):
    a, _ = _two_checkpoints(tmp_path)
    other = save_model(
        build_model("ssamba-kws", num_classes=3, labels=["yes", "no", "_unknown_"]), tmp_path / "c"
    )
    with pytest.raises(CheckpointError, match="another model config"):
        average_checkpoints([a, other], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, capsys):
    a, b = _two_checkpoints(tmp_path)
    assert main([str(a), str(b), "--out", str(tmp_path / "avg"), "--weights", "1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: 2 checkpoint(s) but 1 weight(s)") and error.count("\n") == 1
    assert main([str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "avg")]) == 1
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "avg").exists()
