"""Continuous training (training/stream_rows.py, stream.row_clips): rows of stream and per-block targets.

The targets follow the evaluation's rule (a keyword is wholly in the head's window, partly in it,
or not at all), and the objective scores exactly the head the step graph runs deployed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssamba_stream.model.registry import build_model
from ssamba_stream.model.streaming import offline_stream_logits
from ssamba_training.config import RecipeError, load_recipe
from ssamba_training.data import Batch
from ssamba_training.kws_stream import KwsStreamTask
from ssamba_training.optim import build_optimizer
from ssamba_training.splits import Splits
from ssamba_training.stream_rows import IGNORE, LabelRoles, block_targets, build_rows
from ssamba_training.train import __file__ as train_file

RECIPES = Path(train_file).parent / "recipes"
LABELS = ["yes", "no", "_silence_", "_unknown_"]
ROLES = LabelRoles.from_labels(LABELS, "_unknown_", "_silence_")
YES, NO, SILENCE, UNKNOWN = range(4)
TOKEN = 320


def word_clips(labels: list[int], seed: int = 0) -> torch.Tensor:
    """1 s clips with a 0.4 s "word" at 0.3-0.7 s: a tone per keyword, noise for an unknown word.

    Silence items stay digital zeros.
    """
    generator = torch.Generator().manual_seed(seed)
    clips = torch.zeros(len(labels), 16000)
    time = torch.arange(6400) / 16000
    for i, label in enumerate(labels):
        if label == UNKNOWN:
            clips[i, 4800:11200] = 0.1 * torch.randn(6400, generator=generator)
        elif label != SILENCE:
            clips[i, 4800:11200] = 0.1 * (2**0.5) * torch.sin(2 * torch.pi * (400 + 800 * label) * time)
    return clips


def test_roles_come_from_the_label_names():
    assert ROLES == LabelRoles(frozenset({YES, NO}), UNKNOWN, SILENCE)
    with pytest.raises(ValueError, match="need the labels _unknown_ and _silence_"):
        LabelRoles.from_labels(["yes", "no"], "_unknown_", "_silence_")


def test_targets_follow_the_head_window_over_a_keyword():
    # "yes" over tokens [43, 64): wholly inside the 50-token window for block ends 64..93.
    words = torch.tensor([[0, 43 * TOKEN, 64 * TOKEN, YES], [0, 220 * TOKEN + 5, 241 * TOKEN - 5, UNKNOWN]])
    targets = block_targets(words, rows=1, blocks=40, block=8, window=50, roles=ROLES)[0].tolist()
    assert targets[:5] == [SILENCE] * 5  # ends 8..40: before the word
    assert targets[5:7] == [IGNORE] * 2  # ends 48, 56: the word's start only
    assert targets[7:11] == [YES] * 4  # ends 64..88: all of it
    assert targets[11:14] == [IGNORE] * 3  # ends 96..112: its tail
    assert targets[14:27] == [SILENCE] * 13
    assert targets[27:36] == [UNKNOWN] * 9  # any part of an unknown word: ends 224..288
    assert targets[36:] == [SILENCE] * 4


def test_two_keywords_in_one_window_get_no_target_and_a_partial_one_yields_to_a_whole_one():
    words = torch.tensor([[0, 0, 10 * TOKEN, YES], [0, 12 * TOKEN, 20 * TOKEN, NO], [1, 0, 10 * TOKEN, YES],
                          [1, 30 * TOKEN, 60 * TOKEN, NO]])  # fmt: skip
    targets = block_targets(words, rows=2, blocks=8, block=8, window=24, roles=ROLES)
    # Row 0: block end 24 holds both whole (window [0, 24)); end 32 holds only "no" whole.
    assert targets[0, 2] == IGNORE and targets[0, 3] == NO
    # Row 1, end 32 (window [8, 32)): "yes" partly in, "no" partly in.
    assert targets[1, 3] == IGNORE
    # Row 1, end 16 (window [0, 16)): "yes" wholly in, nothing else yet.
    assert targets[1, 1] == YES


def test_rows_hold_every_clip_once_with_its_word_span_and_power():
    labels = [YES, UNKNOWN, SILENCE, NO, YES, SILENCE]
    clips = word_clips(labels)
    rows = build_rows(clips, torch.tensor(labels), clips_per_row=3, gap_seconds=(0.1, 0.5), roles=ROLES,
                      multiple_of=2560, generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert rows.audio.shape[0] == 2 and rows.audio.shape[1] % 2560 == 0
    assert sorted(rows.words[:, 3].tolist()) == sorted(label for label in labels if label != SILENCE)
    assert torch.allclose(rows.audio.square().sum(), clips.square().sum())  # all audio, nothing twice
    for row, start, end, _ in rows.words.tolist():
        assert end - start == 6400  # the audible span found by energy, not the 1 s clip
        assert rows.audio[row, start:end].square().mean() > 0.005
        assert not rows.audio[row, start - 100 : start].any() and not rows.audio[row, end : end + 100].any()
    assert torch.allclose(rows.word_power, torch.full((2,), 0.01, dtype=torch.float64), rtol=0.1)
    with pytest.raises(ValueError, match="clips_per_row must be >= 1"):
        build_rows(clips, torch.tensor(labels), 0, (0.1, 0.5), ROLES)


def continuous_task(*overrides: str) -> KwsStreamTask:
    recipe = load_recipe(
        RECIPES / "kws-bundled-continuous.yaml", ["model.depth=2", "model.embed_dim=32", *overrides]
    )
    torch.manual_seed(0)
    model = build_model("ssamba-kws", depth=2, embed_dim=32, num_classes=4, labels=LABELS, backward_block=8)
    return KwsStreamTask(
        recipe, model, torch.device("cpu"), Splits(train=[], validation=None, test=None, labels=LABELS)
    )


@pytest.mark.parametrize("block", [8, 4])
def test_continuous_objective_scores_the_head_the_stream_runs(block):
    # block 4: a drawn training block other than the model's own (stream.train_blocks).
    task = continuous_task("augment.freqm=0", f"stream.train_blocks=[{block}]")
    labels = [YES, UNKNOWN, NO, SILENCE]
    batch = Batch(word_clips(labels), torch.tensor(labels), ["a", "b", "c", "d"], [])
    inputs = task.prepare(batch, torch.Generator().manual_seed(0), batch_seed=0)
    task.model.eval()
    hidden = task.model.forward_features(inputs["fbank"])
    assert inputs["block"] == block and inputs["targets"].shape == (1, hidden.shape[1] // block)
    out = task.objective(**inputs)
    # The same audio through the deployed computation gives the logits the loss was taken on.
    rows = build_rows(batch.waveforms, batch.labels, 8, (0.1, 1.0), ROLES, multiple_of=block * TOKEN,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    deployed = offline_stream_logits(task.model, rows.audio, block)
    targets = inputs["targets"].reshape(-1)
    scored = targets != IGNORE
    expected = torch.nn.functional.cross_entropy(deployed.reshape(-1, 4)[scored], targets[scored])
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert out["count"] == scored.sum() and {YES, NO, UNKNOWN, SILENCE} <= set(targets.tolist())
    # The scan form is the call's (benchmarks/train_step_bench.py compares them): same loss, named forms only.
    assert torch.allclose(task.objective(**inputs, scan="ref")["loss"], out["loss"], atol=1e-5)
    with pytest.raises(ValueError, match="unknown scan form"):
        task.objective(**inputs, scan="no-such-scan")


def test_continuous_training_lowers_the_per_block_loss():
    task = continuous_task()
    labels = [YES, UNKNOWN, NO, SILENCE, YES, NO, UNKNOWN, YES]
    batch = Batch(word_clips(labels, seed=2), torch.tensor(labels), [str(i) for i in range(8)], [])
    inputs = task.prepare(batch, torch.Generator().manual_seed(0), batch_seed=0)
    optimizer = build_optimizer(task.model, task.recipe.optim)
    for group in optimizer.param_groups:
        group["lr"] = 1e-2
    task.model.train()
    losses = []
    for _ in range(30):
        loss = task.objective(**inputs)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_row_settings_are_checked():
    with pytest.raises(RecipeError, match="stream.row_gap_seconds"):
        load_recipe(RECIPES / "kws-bundled-continuous.yaml", ["stream.row_gap_seconds=[1.0,0.5]"])
    with pytest.raises(RecipeError, match="stream.row_clips must be >= 0"):
        load_recipe(RECIPES / "kws-bundled-continuous.yaml", ["stream.row_clips=-1"])
