"""data.negatives: the runtime's saved activations trained as _unknown_ items of the training split.

The folders are written by the runtime itself (a random 12-keyword model with a low threshold on
the example recording fires often), so the layout read is the one --save-activations writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_data import RECIPES, make_speech_commands, sine
from test_train import run_train

from ssamba_stream.activations import ActivationSaver, AudioHistory
from ssamba_stream.errors import UserError
from ssamba_stream.kws import Event
from ssamba_stream.spotter import KeywordSpotter
from ssamba_training.config import load_recipe
from ssamba_training.data import load_audio
from ssamba_training.negatives import SavedActivations
from ssamba_training.splits import build_splits

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "keywords.wav"
KEYWORDS = "data.keywords=['yes','no','up']"


@pytest.fixture(scope="module")
def saved(random_kws_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the runtime's saved activations: about twenty events of the example recording."""
    folder = tmp_path_factory.mktemp("saved") / "activations"
    KeywordSpotter(random_kws_model, threshold=0.05, save_activations=folder).process_file(EXAMPLE)
    assert len(list(folder.glob("*.wav"))) >= 10 and (folder / "activations.jsonl").is_file()
    return folder


@pytest.fixture(scope="module")
def sc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_commands(tmp_path_factory.mktemp("speech_commands"))


def splits_with(sc_root: Path, *overrides: str):
    recipe = load_recipe(RECIPES / "kws-stream.yaml", [f"data.root={sc_root}", KEYWORDS, *overrides])
    return build_splits(recipe, target_length=98)


def items_from(dataset, folder: Path) -> list:
    return [item for item in (dataset[i] for i in range(len(dataset))) if Path(item.path).parent == folder]


def test_saved_activations_are_unknown_training_items_only(sc_root: Path, saved: Path) -> None:
    wavs = sorted(saved.glob("*.wav"))
    splits = splits_with(sc_root, f"data.negatives=[{saved}]", "data.negatives_repeat=3")
    plain = splits_with(sc_root)
    negatives = items_from(splits.train, saved)
    assert len(splits.train) == len(plain.train) + 3 * len(wavs) and len(negatives) == 3 * len(wavs)
    assert sorted({item.path for item in negatives}) == [str(path) for path in wavs]
    assert {splits.labels[item.label] for item in negatives} == {"_unknown_"}
    assert not items_from(splits.validation, saved) and not items_from(splits.test, saved)
    short = 0
    for item in negatives:  # the second before the event, padded at the start if the stream had less
        audio = load_audio(item.path)[-16000:]
        short += len(audio) < 16000
        assert item.waveform.shape == (16000,)
        np.testing.assert_array_equal(item.waveform[16000 - len(audio) :].numpy(), audio)
        assert not item.waveform[: 16000 - len(audio)].any()
    assert short > 0  # the first event fires 0.16 s into the stream


def test_true_detections_moved_to_a_sub_folder_are_left_out(
    sc_root: Path, saved: Path, tmp_path: Path
) -> None:
    sorted_folder = Path(shutil.copytree(saved, tmp_path / "sorted"))
    (sorted_folder / "true").mkdir()
    wavs = sorted(sorted_folder.glob("*.wav"))
    for path in wavs[:4]:
        path.rename(sorted_folder / "true" / path.name)
    train = splits_with(sc_root, f"data.negatives=[{sorted_folder}]").train
    assert {item.path for item in items_from(train, sorted_folder)} == {str(path) for path in wavs[4:]}


def test_an_activation_saved_at_another_rate_is_resampled(tmp_path: Path) -> None:
    saver, history = ActivationSaver(tmp_path, "model.onnx", seconds=1.5), AudioHistory(2.5, 8000)
    history.append(sine(440.0, 2.0, 8000))
    saver.save(Event(2.0, "yes", 0.9), history, "stream1")
    (item,) = SavedActivations([str(tmp_path)], ["yes", "_silence_", "_unknown_"], clip_samples=16000)
    spectrum = np.abs(np.fft.rfft(item.waveform.numpy()))
    assert item.label == 2 and np.argmax(spectrum) == 440  # 1 Hz bins over 1 s at 16 kHz


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["data.negatives=[{missing}]"], "does not exist: give a folder that --save-activations wrote"),
        (["data.negatives=[{empty}]"], "has no activation WAVs directly in it"),
        (["data.negatives=[{saved}]", "data.task=35"], "have no _unknown_: train the 12-class task"),
        (["data.negatives=[{saved}]", "data.negatives_repeat=0"], "'data.negatives_repeat' must be >= 1"),
        (["data.negatives={saved}"], "'data.negatives' must be a list"),
    ],
)
def test_bad_negatives_are_one_line_errors(sc_root, saved, tmp_path, overrides, problem) -> None:
    (tmp_path / "empty" / "true").mkdir(parents=True)
    sf.write(tmp_path / "empty" / "true" / "moved.wav", np.zeros(800, np.float32), 16000)
    folders = dict(missing=tmp_path / "missing", empty=tmp_path / "empty", saved=saved)
    with pytest.raises(UserError) as error:
        splits_with(sc_root, *(item.format(**folders) for item in overrides))
    assert problem in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("row_clips", [0, 4])  # clip training, continuous rows
def test_training_draws_the_negatives_and_reports_a_bad_one(sc_root, saved, tmp_path, row_clips) -> None:
    """One epoch over the training set with the negatives, one of them broken: the broken one is met."""
    negatives = Path(shutil.copytree(saved, tmp_path / "negatives"))
    (negatives / "broken.wav").write_text("this is not audio\n")
    result = run_train(
        "--recipe", str(RECIPES / "kws-stream.yaml"), "--out", str(tmp_path / "run"), f"data.root={sc_root}",
        KEYWORDS, f"data.negatives=[{negatives}]", "data.negatives_repeat=2", f"stream.row_clips={row_clips}",
        "model.depth=2", "model.embed_dim=48", "data.num_workers=0", "data.batch_size=16", "epochs=1",
        "schedule.warmup_steps=2", "stream.train_blocks=[8]", "augment.past_seconds=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"epoch 1: skipped 1 bad file: {negatives / 'broken.wav'}" in result.stdout, result.stdout
