"""Training-stack pieces on their own: masks, SSL loss, schedule, parameter groups, samplers, state, init-from."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ssamba_stream.errors import CheckpointError
from ssamba_stream.model.checkpoint import load_model, save_model
from ssamba_stream.model.registry import build_model
from ssamba_training import rng
from ssamba_training.config import ScheduleSection, load_recipe
from ssamba_training.model_init import build_recipe_model, initialise_from
from ssamba_training.optim import LRSchedule, build_optimizer, parameter_groups
from ssamba_training.sampling import EpochShuffleSampler, ShardSampler
from ssamba_training.ssl_task import cluster_mask_indices, masked_prediction_losses, random_mask_indices
from ssamba_training.state import Progress, list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint
from ssamba_training.train import __file__ as train_file

from official_ssamba_keys import official_state_dict

RECIPES = Path(train_file).parent / "recipes"


# ---------------------------------------------------------------------------------- masks and SSL loss
def test_cluster_masks_are_square_clusters_without_token_zero():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        indices = cluster_mask_indices((8, 64), 400, generator)
        assert len(set(indices.tolist())) == 400 and 0 not in indices.tolist()
        assert int(indices.min()) >= 1 and int(indices.max()) < 512
    small = cluster_mask_indices((8, 64), 9, torch.Generator().manual_seed(1)).tolist()
    rows, cols = {i // 64 for i in small}, {i % 64 for i in small}
    assert len(rows) <= 5 and len(cols) <= 5  # one cluster (3x3 .. 5x5, cut at the edges) covers them
    with pytest.raises(ValueError, match="lower ssl.mask_count"):
        cluster_mask_indices((2, 2), 4, generator)


def test_random_frame_masks_are_distinct():
    indices = random_mask_indices(50, 20, torch.Generator().manual_seed(0))
    assert len(set(indices.tolist())) == 20 and int(indices.max()) < 50


def test_infonce_scores_the_clip_s_own_masked_tokens():
    torch.manual_seed(0)
    model = build_model("ssamba-kws", depth=1, embed_dim=32, ssl_heads=True)
    fbank = torch.randn(3, 40, 128)
    indices = torch.stack([random_mask_indices(20, 6, torch.Generator().manual_seed(i)) for i in range(3)])
    nce, mse, accuracy = masked_prediction_losses(model, fbank, indices)
    assert nce.item() > 0 and mse.item() > 0 and 0.0 <= accuracy.item() <= 1.0
    # Perfect predictions (the raw tokens themselves, scaled) would make every token its own best match.
    targets = model.patchify(fbank).gather(1, indices[..., None].expand(-1, -1, 256))
    scores = targets @ (10 * targets).transpose(1, 2)
    assert (torch.softmax(scores, -1).argmax(1) == torch.arange(6)).all()


# ---------------------------------------------------------------------------------- optimiser, schedule
def test_no_weight_decay_on_flagged_params_biases_norms_and_tokens():
    model = build_model("ssamba-tiny", depth=2, embed_dim=48, num_classes=5, ssl_heads=True)
    groups = parameter_groups(model, 0.05, head_lr_scale=10.0)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0.0 for p in g["params"]}
    for suffix in ("mixer.A_log", "mixer.A_b_log", "mixer.D", "mixer.D_b", "norm.weight", "conv1d.bias",
                   "v.cls_token", "v.pos_embed", "mask_embed", "mlp_head.0.weight"):  # fmt: skip
        assert any(n.endswith(suffix) for n in exempt), suffix
    assert "v.layers.0.mixer.in_proj.weight" in decayed and "mlp_head.1.weight" in decayed
    heads = {names[id(p)] for g in groups if g["lr_scale"] == 10.0 for p in g["params"]}
    assert heads == {"mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias"}
    attention = build_model("ssamba-kws", depth=2, num_classes=5, head_pool="attention")
    scales = {n: g["lr_scale"] for g in parameter_groups(attention, 0.05, 2.0, pool_lr_scale=30.0)
              for n, p in attention.named_parameters() for q in g["params"] if p is q}  # fmt: skip
    assert scales["head_attention.weight"] == scales["head_attention.bias"] == 30.0
    assert scales["mlp_head.1.weight"] == 2.0 and scales["v.norm_f.weight"] == 1.0


def test_schedule_warmup_multistep_and_plateau():
    multistep = LRSchedule(
        ScheduleSection(kind="multistep", warmup_steps=10, start_epoch=5, step_epochs=1, gamma=0.85), 1.0
    )
    assert multistep.factor(0, 0) == pytest.approx(0.1) and multistep.factor(9, 0) == 1.0
    assert [round(multistep.factor(100, e), 4) for e in (4, 5, 6)] == [1.0, 0.85, round(0.85**2, 4)]
    plateau = LRSchedule(ScheduleSection(kind="plateau", warmup_steps=0, patience=1, factor=0.5), 1.0)
    for metric in (0.5, 0.6, 0.6, 0.6, 0.55):
        plateau.observe(metric)
    assert plateau.factor(0, 0) == 0.5  # two evaluations without improvement > patience 1
    restored = LRSchedule(plateau.section, 1.0)
    restored.load_state_dict(json.loads(json.dumps(plateau.state_dict())))
    assert restored.state_dict() == plateau.state_dict()


def test_cosine_schedule_falls_from_one_after_warmup_to_zero_at_the_last_step():
    cosine = LRSchedule(ScheduleSection(kind="cosine", warmup_steps=10), 1.0, total_steps=110)
    assert cosine.factor(4, 0) == pytest.approx(0.5)  # still warming up
    assert cosine.factor(10, 0) == pytest.approx(1.0) and cosine.factor(60, 3) == pytest.approx(0.5)
    assert cosine.factor(110, 9) == pytest.approx(0.0) and cosine.factor(500, 9) == pytest.approx(0.0)
    assert cosine.factor(30, 0) > cosine.factor(31, 0)  # falls every step, not per epoch


# ---------------------------------------------------------------------------------- samplers
def test_epoch_sampler_is_seeded_per_epoch_shards_and_skips():
    full = EpochShuffleSampler(10, seed=3)
    full.set_position(epoch=2, skip_batches=0, batch_size=4)
    order = list(full)
    again = EpochShuffleSampler(10, seed=3)
    again.set_position(epoch=2, skip_batches=1, batch_size=4)
    assert list(again) == order[4:] and len(again) == 6
    full.set_position(epoch=3, skip_batches=0, batch_size=4)
    assert list(full) != order
    shards = [EpochShuffleSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for shard in shards:
        shard.set_position(2, 0, 4)
    taken = [i for shard in shards for i in shard]
    assert set(taken) == set(range(10)) and len(taken) == 12 and all(len(s) == 4 for s in shards)  # padded
    assert sorted(i for r in range(3) for i in ShardSampler(10, r, 3)) == list(range(10))


# ---------------------------------------------------------------------------------- state and RNG
def test_rng_states_round_trip_through_tensors():
    rng.seed_everything(5)
    saved = rng.capture()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(7), np.random.rand(2), random.random()
    rng.restore({k: v.clone() for k, v in saved.items()})
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert (
        torch.equal(expected[0], again[0])
        and np.array_equal(expected[1], again[1])
        and expected[2] == again[2]
    )
    assert saved["torch"].dtype == torch.uint8


def test_checkpoint_round_trip_restores_model_optimizer_and_progress(tmp_path):
    torch.manual_seed(0)
    model = build_model("ssamba-kws", depth=1, embed_dim=32, num_classes=3, labels=["a", "b", "c"])
    recipe = load_recipe(RECIPES / "kws-stream.yaml")
    optimizer = build_optimizer(model, recipe.optim)
    model(torch.randn(2, 20, 128)).sum().backward()
    optimizer.step()
    progress = Progress(
        epoch=1, step=7, batches_done=3, best_metric=0.5, best_step=5, extra={"schedule": {"x": 1}}
    )
    for step in (5, 6, 7):
        progress.step = step
        save_checkpoint(tmp_path, model, optimizer, progress, [rng.capture(), rng.capture()], keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000006", "step-0000007"]
    latest = resolve_resume("auto", tmp_path)
    assert load_model(latest).config.labels == ["a", "b", "c"]  # the model part is a save_model checkpoint
    fresh = build_model("ssamba-kws", depth=1, embed_dim=32, num_classes=3, labels=["a", "b", "c"])
    fresh_optimizer = build_optimizer(fresh, recipe.optim)
    restored = load_checkpoint(latest, fresh, fresh_optimizer, rank=1, world_size=2)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True)
    )
    before, after = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for index, entries in before["state"].items():
        assert all(torch.equal(entries[k], after["state"][index][k]) for k in entries)
    assert (restored.progress.epoch, restored.progress.step, restored.progress.batches_done) == (1, 7, 3)
    assert restored.progress.extra == {"schedule": {"x": 1}} and restored.rng_states is not None
    assert (
        load_checkpoint(latest, fresh, fresh_optimizer, rank=0, world_size=1).rng_states is None
    )  # other world size
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in latest.iterdir())


# ---------------------------------------------------------------------------------- init-from
def test_mean_head_checkpoint_initialises_an_attention_head_unchanged(tmp_path):
    recipe = load_recipe(RECIPES / "kws-stream.yaml", ["model.depth=2"])
    source = build_recipe_model(recipe, ["yes", "no"]).eval()
    save_model(source, tmp_path / "mean")
    attention = build_recipe_model(
        load_recipe(RECIPES / "kws-stream.yaml", ["model.depth=2", "model.head_pool=attention"]),
        ["yes", "no"],
    ).eval()
    report = initialise_from(attention, str(tmp_path / "mean"))
    assert set(report.new) == {"head_attention.weight", "head_attention.bias"} and not report.ignored
    fbank = torch.randn(1, 100, 128)
    assert torch.allclose(attention(fbank), source(fbank), atol=1e-6)


def test_official_patch_checkpoint_initialises_the_streaming_model(tmp_path):
    path = tmp_path / "amba_tiny.pth"
    official = official_state_dict(48, 2, task="pretrain", seed=1)
    torch.save(official, path)
    recipe = load_recipe(RECIPES / "kws-stream.yaml", ["model.depth=2", "model.embed_dim=48"])
    model = build_recipe_model(recipe, ["yes", "no"])
    report = initialise_from(model, str(path))
    assert torch.equal(
        model.state_dict()["v.layers.1.mixer.A_b_log"], official["module.v.layers.1.mixer.A_b_log"]
    )
    assert torch.equal(model.state_dict()["v.norm_f.weight"], official["module.v.norm_f.weight"])
    assert {"v.patch_embed.proj.weight", "v.patch_embed.proj.bias", "mlp_head.1.weight"} <= set(report.new)
    assert {"v.pos_embed", "v.cls_token", "p_input_tdim"} <= set(report.ignored)
    assert report.summary().startswith(f"init-from {path}: transferred") and "layers 0-1" in report.summary()
    wider = build_recipe_model(load_recipe(RECIPES / "kws-stream.yaml", ["model.depth=2"]), ["yes"])
    with pytest.raises(CheckpointError, match="embed_dim 48 vs 96"):
        initialise_from(wider, str(path))
