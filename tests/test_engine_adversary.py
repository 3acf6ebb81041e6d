"""Engine-adversarial training (training/engine_adversary.py, recipe ``adversary``).

The unit tests build the task on a table like the one ``ssamba_training.synth`` writes; the end-to-end
test synthesises a two-engine set (espeak-ng and SVOX Pico) and trains on it for real.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_stream_rows import LABELS, NO, RECIPES, SILENCE, UNKNOWN, YES, word_clips

from ssamba_stream.model.registry import build_model
from ssamba_training import train as train_module
from ssamba_training.config import RecipeError, load_recipe
from ssamba_training.data import Batch, ClipDataset
from ssamba_training.engine_adversary import CLIPS_TABLE, EngineAdversary
from ssamba_training.kws_stream import KwsStreamTask
from ssamba_training.optim import build_optimizer
from ssamba_training.splits import Splits
from ssamba_training.synth import main as synth_main

from audio_fixtures import ESPEAK, SKIP_REASON

ENGINE_OF_LABEL = {YES: "espeak", NO: "pico", UNKNOWN: "hedgewars"}


def test_the_encoder_gets_the_classifiers_gradient_reversed_and_scaled():
    torch.manual_seed(0)
    adversary = EngineAdversary(8, ("a", "b", "c"), hidden=16, weight=0.3)
    features = torch.randn(5, 8, requires_grad=True)
    engines = torch.tensor([0, 1, 2, 1, 0])
    loss, _ = adversary(features, engines)
    loss.backward()
    plain = features.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adversary.classifier(plain), engines).backward()
    assert torch.allclose(features.grad, -0.3 * plain.grad, atol=1e-7)
    assert plain.grad.abs().sum() > 0
    # The classifier itself learns from the ordinary gradient: its loss falls.
    optimizer = torch.optim.Adam(adversary.parameters(), lr=1e-2)
    first = float(loss.detach())
    for _ in range(50):
        loss, right = adversary(features.detach(), engines)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.2 * first and float(right) == 1.0
    empty, right = adversary(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long))
    assert float(empty.detach()) == 0.0 and float(right) == 0.0


def write_table(root: Path, engines: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / CLIPS_TABLE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "split", "word", "engine"])
        writer.writeheader()
        for key, engine in engines.items():
            writer.writerow({"file": key, "split": "train", "word": key.split("/")[0], "engine": engine})


def adversary_task(root: Path, items: list[tuple[str, int]], *overrides: str) -> KwsStreamTask:
    recipe = load_recipe(
        RECIPES / "kws-bundled-continuous.yaml",
        ["model.depth=2", "model.embed_dim=32", f"data.root={root}", "augment.freqm=0", *overrides],
    )
    torch.manual_seed(0)
    model = build_model("ssamba-kws", depth=2, embed_dim=32, num_classes=4, labels=LABELS, backward_block=8)
    train = ClipDataset(items, LABELS, 16000, 16000, random_crop=False, seed=0)
    return KwsStreamTask(recipe, model, torch.device("cpu"), Splits(train, None, None, LABELS))


def test_each_held_word_is_labelled_with_its_clips_engine(tmp_path):
    labels = [YES, UNKNOWN, NO, SILENCE, YES, NO, UNKNOWN, YES]
    paths = [f"/data/w{i}/clip{i}.wav" for i in range(len(labels))]
    table = {
        f"w{i}/clip{i}.wav": ENGINE_OF_LABEL[label] for i, label in enumerate(labels) if label != SILENCE
    }
    del table["w4/clip4.wav"]  # a clip the table does not list (a "yes")
    write_table(tmp_path, table)
    items = [(p, label) for p, label in zip(paths, labels, strict=True)]
    task = adversary_task(tmp_path, items, "adversary.weight=0.5")
    assert task.auxiliary is not None and task.auxiliary.engines == ("espeak", "hedgewars", "pico")
    batch = Batch(word_clips(labels, seed=2), torch.tensor(labels), paths, [])
    inputs = task.prepare(batch, torch.Generator().manual_seed(0), batch_seed=0)
    at, engines = inputs["adversary_at"], inputs["adversary_engines"]
    assert at.shape[0] >= 3 and engines.shape == (at.shape[0],)
    held_labels = inputs["targets"][at[:, 0], at[:, 1]].tolist()
    named = [task.auxiliary.engines[e] for e in engines.tolist()]
    assert named == [ENGINE_OF_LABEL[label] for label in held_labels]
    assert len(set(named)) >= 2
    # The unlisted "yes" is left out: there are fewer "yes" blocks than with it in the table.
    write_table(tmp_path, {**table, "w4/clip4.wav": "espeak"})
    listed = adversary_task(tmp_path, items, "adversary.weight=0.5").prepare(
        batch, torch.Generator().manual_seed(0), batch_seed=0
    )
    assert listed["adversary_at"].shape[0] > at.shape[0]

    task.model.eval()
    out = task.objective(**inputs)
    plain = task.objective(**{k: v for k, v in inputs.items() if not k.startswith("adversary")})
    assert torch.allclose(out["loss"], plain["loss"] + out["engine_loss"] / out["count"], atol=1e-6)
    assert 0.0 <= float(out["engine_accuracy"] / out["count"]) <= 1.0
    # The optimiser built for the task trains the classifier too.
    optimizer = build_optimizer(task.model, task.recipe.optim, task.auxiliary)
    before = [p.detach().clone() for p in task.auxiliary.parameters()]
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, task.auxiliary.parameters(), strict=True))


def test_adversary_settings_and_tables_are_checked(tmp_path):
    items = [("/d/yes/a.wav", YES), ("/d/no/b.wav", NO)]
    with pytest.raises(
        RecipeError, match="adversary needs each clip's engine from .*build the data set with"
    ):
        adversary_task(tmp_path / "none", items, "adversary.weight=0.5")
    write_table(tmp_path, {"yes/a.wav": "espeak", "no/b.wav": "espeak"})
    with pytest.raises(RecipeError, match="training words from two engines or more; .* gives 1"):
        adversary_task(tmp_path, items, "adversary.weight=0.5")
    assert adversary_task(tmp_path, items).auxiliary is None  # weight 0: off, no table needed
    with pytest.raises(RecipeError, match="adversary works with task kws-stream on rows"):
        load_recipe(RECIPES / "kws-bundled-continuous.yaml", ["adversary.weight=1", "stream.row_clips=0"])
    with pytest.raises(
        RecipeError, match="adversary.weight must be >= 0, adversary.hidden >= 1 and adversary.lr_scale > 0"
    ):
        load_recipe(RECIPES / "kws-bundled-continuous.yaml", ["adversary.hidden=0"])


@pytest.mark.skipif(
    ESPEAK is None or shutil.which("pico2wave") is None, reason=f"{SKIP_REASON}; and pico2wave"
)
def test_a_resumed_adversarial_run_ends_with_the_same_weights(tmp_path):
    data = tmp_path / "sc"
    assert synth_main([
        "--out", str(data), "--keywords", "yes,no", "--unknown-words", "cat,bird",
        "--train-engines", "espeak:en-us,espeak:en-gb,espeak:en-us+f2,pico", "--val-voices", "1", "--test-voices", "1",
        "--per-voice", "4", "--renditions", "pico=8", "--noise-clips", "2", "--noise-seconds", "4",
        "--seed", "3", "--jobs", "1",
    ]) == 0  # fmt: skip

    def train(out: Path, *extra: str) -> None:
        args = [sys.executable, str(Path(train_module.__file__)), "--recipe",
                str(RECIPES / "kws-bundled-continuous.yaml"), "--out", str(out), f"data.root={data}",
                "data.keywords=[yes,no]", "model.depth=2", "model.embed_dim=32", "data.num_workers=0",
                "data.batch_size=8", "epochs=20", "max_steps=9", "log_every=3", "checkpoint.every_steps=3",
                "checkpoint.keep=5", "eval.every_steps=9", "adversary.weight=0.5", *extra]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr

    reference = tmp_path / "reference"
    train(reference)
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    for name in ("final", "best", "checkpoints/step-0000006", "checkpoints/step-0000009"):
        shutil.rmtree(resumed / name)
    train(resumed, "--resume", "auto")
    for name in ("final/model.safetensors", "checkpoints/step-0000009/auxiliary.safetensors"):
        expected, actual = load_file(str(reference / name)), load_file(str(resumed / name))
        assert expected.keys() == actual.keys()
        assert max(float((expected[k] - actual[k]).abs().max()) for k in expected) <= 1e-6, name
    first = load_file(str(reference / "checkpoints/step-0000003/auxiliary.safetensors"))
    last = load_file(str(reference / "checkpoints/step-0000009/auxiliary.safetensors"))
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the classifier trained
    header = (reference / "metrics.csv").read_text().splitlines()[0]
    assert "train/engine_loss" in header and "train/engine_accuracy" in header
