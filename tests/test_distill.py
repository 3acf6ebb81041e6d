"""Distillation from the speech_embedding teacher (training/teacher.py, recipe ``distill``).

The teacher runs for real where openWakeWord's wheel is installed (``.ci/run`` installs it); the
rest needs no teacher model: the targets come from an embeddings file like the one it writes.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_stream_rows import LABELS, NO, RECIPES, SILENCE, TOKEN, UNKNOWN, YES, continuous_task, word_clips
from torch.utils.data import ConcatDataset, Subset

from ssamba_stream.model.registry import build_model
from ssamba_training.config import RecipeError, load_recipe
from ssamba_training.data import Batch, ClipDataset, RoomReverb
from ssamba_training.kws_stream import KwsStreamTask, similarity_mismatch
from ssamba_training.optim import build_optimizer
from ssamba_training.splits import Splits
from ssamba_training.stream_rows import block_words
from ssamba_training.teacher import (
    SpeechEmbedding,
    TeacherError,
    clip_key,
    embed_folder,
    load_embeddings,
    main,
    save_embeddings,
)

from audio_fixtures import ESPEAK, SKIP_REASON, synthesize_speech

HAS_TEACHER = importlib.util.find_spec("openwakeword") is not None
NO_TEACHER = "openWakeWord's wheel is not installed (pip install --no-deps openwakeword==0.5.1)"


def test_the_head_is_compared_with_the_teacher_only_where_it_holds_one_whole_word():
    # "yes" over tokens [43, 64); an unknown word over [220, 241); "no" over [250, 260) right after it.
    words = torch.tensor([[0, 43 * TOKEN, 64 * TOKEN, YES], [0, 220 * TOKEN, 241 * TOKEN, UNKNOWN],
                          [0, 250 * TOKEN, 260 * TOKEN, NO]])  # fmt: skip
    held = block_words(words, rows=1, blocks=40, block=8, window=50)[0].tolist()
    assert held[7:11] == [0] * 4  # ends 64..88: "yes" whole, nothing else
    assert held[:7] == [-1] * 7 and held[11:30] == [-1] * 19  # before, partly, after
    assert held[30] == 1  # end 248: the unknown word whole, "no" not begun
    assert held[31:36] == [-1] * 5  # ends 256..288: "no" begun or whole, but part of the other word in too
    assert held[36] == 2 and held[37:] == [-1] * 3  # end 296: "no" alone; then only its tail


def test_the_mismatch_ignores_rotation_scale_and_offset_of_the_student():
    generator = torch.Generator().manual_seed(0)
    words = torch.randn(3, 96, generator=generator)  # three words, four renditions each
    teacher = words.repeat(4, 1) + 0.2 * torch.randn(12, 96, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(96, 96, generator=generator))
    assert similarity_mismatch(3.0 * teacher @ rotation + 5.0, teacher) < 1e-10
    assert similarity_mismatch(torch.randn(12, 96, generator=generator), teacher) > 0.1
    single = torch.randn(1, 8, requires_grad=True)
    assert similarity_mismatch(single, teacher[:1]) == 0.0  # one word: nothing to compare it with


def teacher_file(tmp_path: Path, keys: list[str], words: list[int] | None = None) -> Path:
    """Embeddings like the teacher's: clips of one word close together (a centre per word)."""
    rng = np.random.default_rng(0)
    words = words or list(range(len(keys)))
    centres = rng.normal(size=(max(words) + 1, 96))
    path = tmp_path / "teacher.npz"
    save_embeddings(
        {k: centres[w] + 0.2 * rng.normal(size=96) for k, w in zip(keys, words, strict=True)}, path
    )
    return path


def test_training_rows_carry_the_teachers_embedding_of_each_held_word(tmp_path):
    labels = [YES, UNKNOWN, NO, SILENCE, YES, NO, UNKNOWN, YES]
    paths = [f"/data/w{i}/clip{i}.wav" for i in range(len(labels))]
    teacher = teacher_file(tmp_path, [clip_key(p) for p in paths], labels)
    task = continuous_task("augment.freqm=0", f"distill.teacher={teacher}", "distill.weight=2.0")
    batch = Batch(word_clips(labels, seed=2), torch.tensor(labels), paths, [])
    inputs = task.prepare(batch, torch.Generator().manual_seed(0), batch_seed=0)
    at, to = inputs["distill_at"], inputs["distill_to"]
    assert at.shape[0] >= 4 and to.shape == (at.shape[0], 96)
    standardised = load_embeddings(teacher)
    # Each compared block's target is the embedding of the clip whose word the window holds.
    targets = inputs["targets"][at[:, 0], at[:, 1]].tolist()
    for target, embedding in zip(targets, to, strict=True):
        owners = [p for p, label in zip(paths, labels, strict=True) if label == target]
        assert any(torch.allclose(embedding, torch.from_numpy(standardised[clip_key(p)])) for p in owners)
    task.model.eval()
    out = task.objective(**inputs)
    plain = task.objective(**{k: v for k, v in inputs.items() if not k.startswith("distill")})
    assert torch.allclose(out["loss"], plain["loss"] + 2.0 * out["distill"] / out["count"], atol=1e-6)
    # Training pulls the student's similarities towards the teacher's.
    task.model.train()
    optimizer = build_optimizer(task.model, task.recipe.optim)
    for group in optimizer.param_groups:
        group["lr"] = 1e-2
    first = last = math.nan
    for step in range(15):
        out = task.objective(**inputs)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        first, last = (out["distill"].item() if step == 0 else first), out["distill"].item()
    assert last < 0.5 * first, (first, last)


def test_a_clip_without_a_teacher_embedding_is_named(tmp_path):
    teacher = teacher_file(tmp_path, ["yes/other.wav"])
    task = continuous_task(f"distill.teacher={teacher}")
    batch = Batch(word_clips([YES, NO]), torch.tensor([YES, NO]), ["/d/yes/a.wav", "/d/no/b.wav"], [])
    with pytest.raises(RecipeError, match=r"clip (yes/a|no/b)\.wav has no teacher embedding"):
        task.prepare(batch, torch.Generator().manual_seed(0), batch_seed=0)


def test_training_clips_without_teacher_embeddings_stop_the_run_at_start_up(tmp_path):
    items = [("/d/yes/a.wav", YES), ("/d/no/b.wav", NO), ("/d/_background_noise_/n.wav", SILENCE)]
    clips = ClipDataset(items, LABELS, 16000, 16000, random_crop=False, seed=0)
    # Silence items are noise, never a held word: they need no embedding.
    covered = teacher_file(tmp_path, ["yes/a.wav", "no/b.wav"])
    recipe = load_recipe(
        RECIPES / "kws-bundled-continuous.yaml",
        ["model.depth=2", "model.embed_dim=32", f"distill.teacher={covered}"],
    )
    model = build_model("ssamba-kws", depth=2, embed_dim=32, num_classes=4, labels=LABELS, backward_block=8)
    both = ConcatDataset([Subset(clips, [0, 2]), clips])  # as WithNegatives joins saved negatives
    both.labels = LABELS
    wrapped = RoomReverb(both, [np.ones(1)], 0.5)
    KwsStreamTask(recipe, model, torch.device("cpu"), Splits(wrapped, None, None, LABELS))
    partial = teacher_file(tmp_path, ["yes/a.wav"])
    recipe = load_recipe(
        RECIPES / "kws-bundled-continuous.yaml",
        ["model.depth=2", "model.embed_dim=32", f"distill.teacher={partial}"],
    )
    with pytest.raises(RecipeError, match=r"clip no/b\.wav has no teacher embedding"):
        KwsStreamTask(recipe, model, torch.device("cpu"), Splits(wrapped, None, None, LABELS))
    with pytest.raises(RecipeError, match=r"2 training clips \(the first: no/b\.wav\) have no teacher"):
        KwsStreamTask(
            recipe, model, torch.device("cpu"), Splits(ConcatDataset([clips, clips]), None, None, LABELS)
        )


def test_distillation_settings_are_checked(tmp_path):
    with pytest.raises(RecipeError, match="set stream.row_clips > 0"):
        load_recipe(RECIPES / "kws-bundled-continuous.yaml", ["distill.teacher=t.npz", "stream.row_clips=0"])
    with pytest.raises(RecipeError, match="distill.weight must be >= 0"):
        load_recipe(RECIPES / "kws-bundled-continuous.yaml", ["distill.weight=-1"])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(TeacherError, match="cannot read teacher embeddings"):
        load_embeddings(bad)


@pytest.mark.skipif(not HAS_TEACHER, reason=NO_TEACHER)
@pytest.mark.skipif(ESPEAK is None, reason=SKIP_REASON)
def test_the_teacher_embeds_the_word_wherever_it_sits_in_the_clip(tmp_path):
    def clip(word: str, offset: int) -> np.ndarray:
        speech = synthesize_speech(word)[:12000]
        out = np.zeros(16000, dtype=np.float32)
        out[offset : offset + speech.size] = speech[: 16000 - offset]
        return out

    teacher = SpeechEmbedding(threads=1)
    early, late, other = (
        teacher.word_embedding(clip(w, o)) for w, o in (("yes", 0), ("yes", 3000), ("stop", 0))
    )
    assert early.shape == (96,) and np.isfinite(early).all()
    assert np.linalg.norm(early - late) < 0.5 * np.linalg.norm(early - other)
    # The command line writes one embedding per clip under its word/file name.
    for word, offset in (("yes", 0), ("yes", 3000), ("stop", 0)):
        (tmp_path / "data" / word).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "data" / word / f"{offset}.wav", clip(word, offset), 16000)
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "t.npz"), "--threads", "1"]) == 0
    assert sorted(load_embeddings(tmp_path / "t.npz")) == ["stop/0.wav", "yes/0.wav", "yes/3000.wav"]
    assert len(embed_folder(tmp_path / "data", teacher, progress=False)) == 3


@pytest.mark.skipif(not HAS_TEACHER, reason=NO_TEACHER)
@pytest.mark.skipif(ESPEAK is None, reason=SKIP_REASON)
def test_every_hop_embeddings_are_causal_and_the_same_however_the_calls_are_cut():
    speech = synthesize_speech("yes")
    audio = np.zeros(16000 * 4, dtype=np.float32)
    audio[16000 : 16000 + speech.size] = speech
    audio += np.random.default_rng(0).normal(0, 1e-3, audio.size).astype(np.float32)
    teacher = SpeechEmbedding(threads=1)
    rows = teacher.every_hop(audio)
    assert rows.shape == (audio.size // 1280, 96) and np.isfinite(rows).all()
    np.testing.assert_array_equal(teacher.every_hop(audio, batch=7), rows)
    # Row i sees the audio up to sample 1280 (i + 1) and nothing later: a loud burst just after
    # changes the next row, not this one.
    louder = audio.copy()
    louder[1280 * 20 :] += np.random.default_rng(1).normal(0, 0.5, louder.size - 1280 * 20).astype(np.float32)
    changed = teacher.every_hop(louder)
    np.testing.assert_array_equal(changed[:20], rows[:20])
    assert np.abs(changed[20] - rows[20]).max() > 0.1
    # The word changes the rows whose 0.78 s hold it, not those long before it.
    quiet = teacher.every_hop(audio * (np.arange(audio.size) < 16000))
    np.testing.assert_array_equal(quiet[:12], rows[:12])
    assert np.abs(quiet[14:20] - rows[14:20]).max() > 0.1


def test_the_teacher_command_names_a_folder_without_clips(tmp_path, capsys):
    code = main(["--data", str(tmp_path), "--out", str(tmp_path / "t.npz")])
    error = capsys.readouterr().err.strip()
    if HAS_TEACHER:
        assert code == 1 and error.startswith("error: no word/*.wav clips under") and "\n" not in error
    else:
        assert code == 1 and "pip install --no-deps openwakeword" in error
    assert not (tmp_path / "t.npz").exists()
