"""training/train.py end to end on a tiny espeak-ng keyword set: real training, nothing mocked.

One data set (3 keywords, 20 speakers) is synthesised per module. Every run is a subprocess of
the real CLI, as a user starts it, so global state (seeds, deterministic mode) stays out of the
test process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssamba_stream.model.checkpoint import load_model
from ssamba_training import train as train_module
from ssamba_training.config import load_recipe
from ssamba_training.distributed import state_digest
from ssamba_training.model_init import build_recipe_model, initialise_from
from ssamba_training.synth import main as synth_main

from audio_fixtures import ESPEAK, SKIP_REASON

SCRIPT = Path(train_module.__file__)
RECIPES = SCRIPT.parent / "recipes"
KEYWORDS = ("yes", "no", "stop")
TINY = ["model.depth=2", "model.embed_dim=48", "data.num_workers=0", "data.task=35", "log_every=5",
        "stream.train_blocks=[4,8]", "augment.past_seconds=0.5"]  # fmt: skip


@pytest.fixture(scope="module")
def keyword_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech Commands layout: yes/no/stop by 20 speakers (14 train, 3 validation, 3 test), noise files."""
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    out = tmp_path_factory.mktemp("kws") / "sc"
    assert synth_main([
        "--out", str(out), "--keywords", ",".join(KEYWORDS), "--unknown-words", "",
        "--voices", "en-us,en-gb,en-gb-scotland,en-029", "--variants", "m3,f2,klatt2,f4",
        "--per-voice", "4", "--val-voices", "3", "--test-voices", "3",
        "--noise-clips", "4", "--noise-seconds", "4", "--seed", "3", "--jobs", "2",
    ]) == 0  # fmt: skip
    return out


# One thread per process: on a shared 2-core machine, torch's default of one per core oversubscribes.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}


def run_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def kws_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--recipe",
        str(RECIPES / "kws-stream.yaml"),
        "--out",
        str(out),
        f"data.root={data}",
        *TINY,
        *extra,
    ]


def metrics_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


# ---------------------------------------------------------------------------------- one real run
@pytest.fixture(scope="module")
def kws_run(
    keyword_set: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    """kws-stream on the keyword set plus two bad training files, 6 epochs."""
    data = tmp_path_factory.mktemp("bad") / "sc"
    shutil.copytree(keyword_set, data)
    good = sorted((data / "yes").glob("*.wav"))[0].read_bytes()
    (data / "yes" / "ffffffff_nohash_0.wav").write_bytes(good[: len(good) // 2 + 1])  # truncated WAV
    (data / "no" / "ffffffff_nohash_0.wav").write_text("this is not audio\n")  # text named .wav
    out = tmp_path_factory.mktemp("run") / "kws"
    result = run_train(*kws_args(data, out, "epochs=6", "data.batch_size=16", "optim.lr=3e-3",
                                 "schedule.warmup_steps=10", "checkpoint.every_steps=1000"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result


def test_short_run_learns_the_keywords(kws_run):
    out, _ = kws_run
    final = json.loads((out / "final" / "config.json").read_text())["metadata"]["metrics"]
    assert final["validation/accuracy"] >= 0.8, final  # chance is 1/3
    assert final["test/accuracy_full"] >= 0.8 and final["test/accuracy_B8"] >= 0.8, final


def test_bad_files_are_skipped_and_reported_every_epoch(kws_run):
    out, result = kws_run
    reports = [
        line for line in result.stdout.splitlines() if line.startswith("epoch ") and "bad files" in line
    ]
    assert len(reports) == 6 and all("skipped 2 bad files" in line for line in reports), result.stdout
    assert "truncated" in reports[0] and "ffffffff_nohash_0.wav" in reports[0]
    skipped = [row["train/skipped_files"] for row in metrics_rows(out) if row.get("train/skipped_files")]
    assert [float(v) for v in skipped] == [2.0] * 6


def test_run_writes_metrics_reports_and_an_exportable_final_model(kws_run):
    out, _ = kws_run
    rows = metrics_rows(out)
    assert any(row["train/loss"] for row in rows) and any(row["validation/accuracy_B8"] for row in rows)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    for name in ("validation_full", "validation_B8", "test_full", "test_B8"):
        report = json.loads((out / "eval" / name / "per_class.json").read_text())
        assert [row["label"] for row in report["per_class"]] == sorted(KEYWORDS)
        assert (out / "eval" / name / "per_class.csv").is_file()
        assert (out / "eval" / name / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_model(out / "final")
    assert model.config.labels == sorted(KEYWORDS) and model.config.backward_block == 8
    best = json.loads((out / "best" / "config.json").read_text())["metadata"]["best"]
    assert best["metric"] == "validation/accuracy"
    kept = [json.loads((p / "trainer.json").read_text()) for p in sorted((out / "checkpoints").iterdir())]
    assert [(t["epoch"], t["batches_done"]) for t in kept] == [
        (4, 0),
        (5, 0),
        (6, 0),
    ]  # newest 3, one per epoch


# ---------------------------------------------------------------------------------- resume
def test_run_killed_mid_epoch_resumes_to_the_same_weights(keyword_set, tmp_path):
    common = [
        "epochs=2",
        "max_steps=30",
        "data.batch_size=8",
        "checkpoint.every_steps=4",
        "checkpoint.keep=2",
    ]
    reference = run_train(*kws_args(keyword_set, tmp_path / "reference", *common))
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    command = [sys.executable, str(SCRIPT), *kws_args(keyword_set, out, *common)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 240
    try:
        while not (out / "checkpoints" / "step-0000008").is_dir():  # 21 batches per epoch: mid-epoch
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "final").exists()

    resumed = run_train(*kws_args(keyword_set, out, *common), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    line = next(line for line in resumed.stdout.splitlines() if line.startswith("resumed from"))
    assert "epoch 1," in line and " 0 batches done" not in line, line
    expected = load_file(str(tmp_path / "reference" / "final" / "model.safetensors"))
    actual = load_file(str(out / "final" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    worst = max(float((expected[k] - actual[k]).abs().max()) for k in expected)
    assert worst <= 1e-6, worst
    steps = [int(row["step"]) for row in metrics_rows(out) if row.get("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # the killed run's later rows were dropped


# ---------------------------------------------------------------------------------- distributed
def test_two_process_torchrun_run_keeps_replicas_identical(keyword_set, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
               *kws_args(keyword_set, out, "epochs=1", "data.batch_size=8")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((out / "final" / "config.json").read_text())["metadata"]
    digests = metadata["replica_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == state_digest(load_model(out / "final"))  # the saved weights are the replicas'
    assert result.stdout.count("final model in") == 1  # rank 0 alone prints and writes
    report = json.loads((out / "eval" / "validation_B8" / "per_class.json").read_text())
    assert sum(row["support"] for row in report["per_class"]) == 36  # both ranks' shards, each clip once
    assert [(t["epoch"], t["batches_done"]) for t in [json.loads((p / "trainer.json").read_text())
            for p in (out / "checkpoints").iterdir()]] == [(1, 0)]  # fmt: skip


# ---------------------------------------------------------------------------------- pretraining
@pytest.fixture(scope="module")
def ssl_run(keyword_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Masked patch modelling (cluster masks) with a 2-layer patch model on the keyword audio."""
    out = tmp_path_factory.mktemp("ssl") / "run"
    result = run_train(
        "--recipe", str(RECIPES / "ssl-pretrain.yaml"), "--out", str(out), f"data.root={keyword_set}",
        "model.depth=2", "model.embed_dim=48", "model.target_length=128", "ssl.mask_count=20",
        "data.batch_size=8", "data.num_workers=0", "max_steps=40", "log_every=5", "optim.lr=1e-3",
        "schedule.warmup_steps=5", "eval.every_steps=20", "ssl.eval_batches=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "amp=bf16 applies on CUDA only" in result.stdout
    return out


def test_ssl_pretraining_loss_falls(ssl_run):
    rows = [row for row in metrics_rows(ssl_run) if row.get("train/loss")]
    first, last = float(rows[0]["train/loss"]), float(rows[-1]["train/loss"])
    assert last < 0.7 * first, (first, last)
    evaluations = [
        float(row["validation/masked_accuracy"])
        for row in metrics_rows(ssl_run)
        if row.get("validation/masked_accuracy")
    ]
    assert len(evaluations) == 2 and all(0.0 <= a <= 1.0 for a in evaluations)
    assert {"train/nce", "train/mse", "train/masked_accuracy"} <= set(rows[-1])


def test_pretrained_patch_model_initialises_a_frame_model(ssl_run):
    recipe = load_recipe(RECIPES / "kws-stream.yaml", ["model.depth=2", "model.embed_dim=48"])
    model = build_recipe_model(recipe, list(KEYWORDS))
    report = initialise_from(model, str(ssl_run / "final"))
    pretrained = load_file(str(ssl_run / "final" / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], pretrained[k]) for k in report.transferred)
    assert {k.split(".")[1] for k in report.transferred} == {"layers", "norm_f"}
    assert "v.patch_embed.proj.weight" in report.new and "mlp_head.1.weight" in report.new
    assert "v.pos_embed" in report.ignored and "cpredlayer.0.weight" in report.ignored
    assert "layers 0-1" in report.summary()
