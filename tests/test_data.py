"""training/data.py: decoding edge cases and the data sets, on small real audio files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from ssamba_stream.errors import UserError
from ssamba_training.config import load_recipe
from ssamba_training.data import (
    ESC50,
    BadAudioError,
    Example,
    FolderDataset,
    ManifestDataset,
    Skipped,
    SkipReport,
    SpeechCommands,
    UnlabelledAudio,
    background_noises,
    collate_skipping_bad,
    load_audio,
)
from ssamba_training.splits import LabelledFraction, build_splits

RECIPES = Path(__file__).parent.parent / "training" / "recipes"

SR = 16000


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int = SR, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not audio\n" * 20)
    return path


# ---------------------------------------------------------------------------------------------
# load_audio


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_frequency(tmp_path: Path, rate: int) -> None:
    path = write(tmp_path / f"sine_{rate}.wav", sine(1000.0, 1.0, rate), rate, "PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - SR) <= 1
    spectrum = np.abs(np.fft.rfft(audio[:SR] * np.hanning(SR)))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 1  # 1 Hz bins
    assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_stereo_is_downmixed_to_the_channel_mean(tmp_path: Path) -> None:
    left, right = sine(440.0, 0.3, SR, 0.6), sine(700.0, 0.3, SR, 0.2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SR, "FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize(
    ("name", "subtype"),
    [
        ("a.wav", "PCM_16"),
        ("a.wav", "PCM_24"),
        ("a.wav", "PCM_32"),
        ("a.wav", "FLOAT"),
        ("a.wav", "DOUBLE"),
        ("a.flac", "PCM_16"),
        ("a.flac", "PCM_24"),
    ],
)
def test_sample_formats_decode_to_the_same_float_audio(tmp_path: Path, name: str, subtype: str) -> None:
    reference = sine(440.0, 0.2, SR, 0.7)
    decoded = load_audio(write(tmp_path / name, reference, SR, subtype))
    np.testing.assert_allclose(decoded, reference, atol=1.0 / 32768)


def test_ogg_vorbis_decodes(tmp_path: Path) -> None:
    reference = sine(440.0, 0.5, SR, 0.5)
    decoded = load_audio(write(tmp_path / "a.ogg", reference, SR, "VORBIS"))
    assert abs(decoded.shape[0] - reference.shape[0]) <= 1
    assert np.sqrt(np.mean((decoded[: reference.shape[0]] - reference) ** 2)) < 0.05


def test_partial_read_matches_the_whole_file(tmp_path: Path) -> None:
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, SR).astype(np.float32)
    path = write(tmp_path / "a.wav", audio, SR, "FLOAT")
    np.testing.assert_array_equal(load_audio(path, offset=0.25, duration=0.5), audio[4000:12000])
    np.testing.assert_array_equal(load_audio(path, offset=0.9, duration=0.5), audio[14400:])


def make_bad_file(tmp_path: Path, kind: str) -> Path:
    """One bad file of each kind the data sets must skip."""
    if kind in ("nan", "inf"):
        audio = sine(440.0, 0.1, SR)
        audio[100] = np.nan if kind == "nan" else np.inf
        return write(tmp_path / f"{kind}.wav", audio, SR, "FLOAT" if kind == "nan" else "DOUBLE")
    if kind == "empty":
        return write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR, "PCM_16")
    if kind in ("cut.wav", "cut.flac"):
        return truncate(write(tmp_path / kind, sine(440.0, 0.5, SR), SR, "PCM_16"))
    if kind == "text":
        return write_text(tmp_path / "text.wav")
    return tmp_path / "missing.wav"


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("nan", "NaN"),
        ("inf", "infinite"),
        ("empty", "no samples"),
        ("cut.wav", "truncated"),
        ("cut.flac", "truncated"),
        ("text", "not a readable audio file"),
        ("missing", "file not found"),
    ],
)
def test_bad_files_raise_bad_audio_error_naming_the_file(tmp_path: Path, kind: str, problem: str) -> None:
    path = make_bad_file(tmp_path, kind)
    with pytest.raises(BadAudioError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert str(path) in message and problem in message and "\n" not in message
    assert isinstance(caught.value, UserError)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.path, copy.problem, str(copy)) == (caught.value.path, caught.value.problem, message)


# ---------------------------------------------------------------------------------------------
# Speech Commands

WORDS = ("yes", "no", "up", "cat", "dog", "bird", "house")
KEYWORDS = ("yes", "no", "up")
FILES_PER_WORD = 10  # speakers 0-1 validation, 2 test, 3-9 train
NOISE_SAMPLES = 24000


def make_speech_commands(root: Path) -> Path:
    rng = np.random.default_rng(0)
    validation, testing = [], []
    for w, word in enumerate(WORDS):
        for k in range(FILES_PER_WORD):
            relative = f"{word}/spk{k}_nohash_0.wav"
            write(root / relative, sine(200.0 + 50 * w + 5 * k, 0.25, SR), SR, "PCM_16")
            (validation if k < 2 else testing if k == 2 else []).append(relative)
    validation.append("yes/listed_but_absent_nohash_0.wav")
    (root / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (root / "testing_list.txt").write_text("\n".join(testing) + "\n")
    for n in range(2):
        noise = rng.uniform(-0.4, 0.4, NOISE_SAMPLES).astype(np.float32)
        write(root / "_background_noise_" / f"noise{n}.wav", noise, SR, "FLOAT")
    (root / "README.md").write_text("not a word\n")
    return root


@pytest.fixture(scope="module")
def sc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_commands(tmp_path_factory.mktemp("speech_commands"))


def relative_paths(dataset: SpeechCommands, root: Path) -> set[str]:
    return {Path(path).relative_to(root).as_posix() for path, _ in dataset.items}


def test_speech_commands_35_splits_follow_the_lists(sc_root: Path) -> None:
    datasets = {split: SpeechCommands(sc_root, split) for split in ("train", "validation", "test")}
    assert datasets["train"].labels == sorted(WORDS)
    every = {f"{w}/spk{k}_nohash_0.wav" for w in WORDS for k in range(FILES_PER_WORD)}
    validation = {f"{w}/spk{k}_nohash_0.wav" for w in WORDS for k in (0, 1)}
    testing = {f"{w}/spk2_nohash_0.wav" for w in WORDS}
    assert relative_paths(datasets["validation"], sc_root) == validation
    assert relative_paths(datasets["test"], sc_root) == testing
    assert relative_paths(datasets["train"], sc_root) == every - validation - testing
    for dataset in datasets.values():
        for path, label in dataset.items:
            assert dataset.labels[label] == Path(path).parent.name
    assert datasets["train"].random_crop and not datasets["test"].random_crop
    item = datasets["test"][0]
    assert isinstance(item, Example) and item.waveform.shape == (SR,) and item.waveform.dtype == torch.float32
    np.testing.assert_array_equal(item.waveform[:4000].numpy(), load_audio(item.path))
    assert not item.waveform[4000:].any()


def test_speech_commands_12_class_mapping_and_proportions(sc_root: Path) -> None:
    dataset = SpeechCommands(
        sc_root, "train", "12", keywords=KEYWORDS, unknown_percentage=30, silence_percentage=20
    )
    assert dataset.labels == ["yes", "no", "up", "_silence_", "_unknown_"]
    counts = np.bincount([label for _, label in dataset.items], minlength=5)
    n_keyword = len(KEYWORDS) * 7
    assert counts[:3].tolist() == [7, 7, 7]
    assert counts[4] == int(np.ceil(n_keyword * 0.3)) and counts[3] == int(np.ceil(n_keyword * 0.2))
    for path, label in dataset.items:
        folder = Path(path).parent.name
        if label == 4:
            assert folder not in KEYWORDS and folder in WORDS
        elif label == 3:
            assert folder == "_background_noise_"
        else:
            assert folder == KEYWORDS[label]
    again = SpeechCommands(
        sc_root, "train", "12", keywords=KEYWORDS, unknown_percentage=30, silence_percentage=20
    )
    assert again.items == dataset.items
    other_seed = SpeechCommands(
        sc_root, "train", "12", keywords=KEYWORDS, unknown_percentage=30, silence_percentage=20, seed=1
    )
    assert other_seed.items != dataset.items
    validation = SpeechCommands(sc_root, "validation", "12", keywords=KEYWORDS)
    assert sorted(label for _, label in validation.items) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert relative_paths(validation, sc_root) <= {
        f"{w}/spk{k}_nohash_0.wav" for w in WORDS for k in (0, 1)
    } | {"_background_noise_/noise0.wav", "_background_noise_/noise1.wav"}


def test_label_fraction_keeps_a_seeded_share_of_every_class(sc_root: Path) -> None:
    overrides = [f"data.root={sc_root}", "data.keywords=['yes','no','up']", "data.label_fraction=0.3"]
    recipe = load_recipe(RECIPES / "kws-stream.yaml", overrides)
    train = build_splits(recipe, target_length=98).train
    full = SpeechCommands(
        sc_root, "train", "12", keywords=KEYWORDS, unknown_percentage=10, silence_percentage=10
    )
    assert isinstance(train, LabelledFraction) and train.labels == full.labels
    full_counts = np.bincount([label for _, label in full.items], minlength=5)
    kept = [train[i] for i in range(len(train))]
    kept_counts = np.bincount([item.label for item in kept], minlength=5)
    assert kept_counts.tolist() == [max(1, round(0.3 * n)) for n in full_counts]
    assert {item.path for item in kept} <= {path for path, _ in full.items}
    again = build_splits(recipe, target_length=98).train
    assert again.indices == train.indices
    reseeded = build_splits(
        load_recipe(RECIPES / "kws-stream.yaml", [*overrides, "seed=5"]), target_length=98
    ).train
    assert reseeded.indices != train.indices


def unknown_words_drawn(dataset: SpeechCommands) -> list[str]:
    unknown = dataset.labels.index("_unknown_")
    return sorted(Path(path).parent.name for path, label in dataset.items if label == unknown)


def test_unknown_word_weights_draw_the_named_words_more_often(sc_root: Path) -> None:
    common = dict(keywords=KEYWORDS, unknown_percentage=30, silence_percentage=0)
    plain = unknown_words_drawn(SpeechCommands(sc_root, "train", "12", **common))
    weighted = unknown_words_drawn(
        SpeechCommands(sc_root, "train", "12", unknown_word_weights={"cat": 1e6}, **common)
    )
    assert len(weighted) == len(plain) == 7  # ceil(0.3 * 21 keyword items)
    assert plain.count("cat") < 7 and weighted == ["cat"] * 7  # the train split has 7 "cat" files
    overrides = [f"data.root={sc_root}", "data.keywords=['yes','no','up']", "data.unknown_percentage=30",
                 "data.unknown_word_weights={cat: 1000000}"]  # fmt: skip
    splits = build_splits(load_recipe(RECIPES / "kws-stream.yaml", overrides), target_length=98)
    assert unknown_words_drawn(splits.train) == ["cat"] * 7
    plain_splits = build_splits(load_recipe(RECIPES / "kws-stream.yaml", overrides[:-1]), target_length=98)
    assert splits.validation.items == plain_splits.validation.items  # evaluation keeps the plain draw
    assert splits.train.items != plain_splits.train.items
    with pytest.raises(UserError, match="'yes', which is not an unknown word"):
        SpeechCommands(sc_root, "train", "12", unknown_word_weights={"yes": 2.0}, **common)
    with pytest.raises(UserError, match=r"unknown_word_weights\['cat'\] must be a number > 0"):
        SpeechCommands(sc_root, "train", "12", unknown_word_weights={"cat": 0.0}, **common)


def test_a_keyword_without_clips_is_refused_before_training(sc_root: Path) -> None:
    """A misspelt keyword used to train for minutes on a class with no examples; now it stops at once."""
    with pytest.raises(
        UserError, match=r"keyword marvn has no clips in the train split .*words with clips there: .*cat"
    ):
        SpeechCommands(sc_root, "train", "12", keywords=("yes", "marvn"))


def best_alignment(noise: np.ndarray, clip: np.ndarray) -> tuple[int, float]:
    """Offset and gain of ``clip`` as a scaled segment of ``noise`` (FFT cross-correlation)."""
    n = noise.shape[0] + clip.shape[0]
    correlation = np.fft.irfft(np.fft.rfft(noise, n) * np.conj(np.fft.rfft(clip, n)), n)
    offset = int(np.argmax(correlation[: noise.shape[0] - clip.shape[0] + 1]))
    segment = noise[offset : offset + clip.shape[0]]
    return offset, float(segment @ clip / (segment @ segment))


def test_speech_commands_silence_items_are_quiet_background_noise(sc_root: Path) -> None:
    dataset = SpeechCommands(
        sc_root, "train", "12", keywords=KEYWORDS, unknown_percentage=0, silence_percentage=200, seed=3
    )
    noises = {f"noise{n}.wav": load_audio(sc_root / "_background_noise_" / f"noise{n}.wav") for n in range(2)}
    silence = [dataset[i] for i, (_, label) in enumerate(dataset.items) if label == 3]
    assert len(silence) == 42
    zeros = 0
    for item in silence:
        clip = item.waveform.numpy()
        if not clip.any():
            zeros += 1
            continue
        noise = noises[Path(item.path).name]
        offset, gain = best_alignment(noise, clip)
        assert 0.0 < gain < 0.1
        np.testing.assert_allclose(clip, gain * noise[offset : offset + SR], atol=1e-6)
    assert 1 <= zeros <= 12


def test_random_crops_are_seeded_per_epoch(tmp_path: Path) -> None:
    root = make_speech_commands(tmp_path / "sc")
    long = np.random.default_rng(1).uniform(-0.5, 0.5, 2 * SR).astype(np.float32)
    write(root / "yes" / "long_nohash_0.wav", long, SR, "FLOAT")
    write(root / "yes" / "long_nohash_1.wav", long, SR, "FLOAT")
    with open(root / "testing_list.txt", "a") as file:
        file.write("yes/long_nohash_1.wav\n")
    train, test = SpeechCommands(root, "train"), SpeechCommands(root, "test")

    def crop(dataset: SpeechCommands) -> np.ndarray:
        index = next(i for i, (path, _) in enumerate(dataset.items) if "long_" in path)
        return dataset[index].waveform.numpy()

    first = crop(train)
    assert np.array_equal(first, crop(train))
    start = int(np.flatnonzero(long == first[0])[0])
    np.testing.assert_array_equal(first, long[start : start + SR])
    train.set_epoch(1)
    assert not np.array_equal(first, crop(train))
    np.testing.assert_array_equal(crop(test), long[SR // 2 : SR // 2 + SR])


def test_bad_files_are_skipped_through_a_dataloader(tmp_path: Path) -> None:
    root = make_speech_commands(tmp_path / "sc")
    truncated = truncate(root / "yes" / "spk5_nohash_0.wav")
    text = write_text(root / "no" / "spk6_nohash_0.wav")
    long = np.random.default_rng(1).uniform(-0.5, 0.5, 2 * SR).astype(np.float32)
    write(root / "up" / "long_nohash_0.wav", long, SR, "FLOAT")  # randomly cropped
    dataset = SpeechCommands(root, "train", "12", keywords=KEYWORDS)
    runs = []
    for num_workers in (0, 2):
        loader = DataLoader(
            dataset,
            batch_size=8,
            shuffle=True,
            num_workers=num_workers,
            collate_fn=collate_skipping_bad,
            generator=torch.Generator().manual_seed(0),
        )
        report, batches = SkipReport(), []
        for batch in loader:
            report.add(batch.skipped)
            batches.append(batch)
            assert batch.waveforms.shape == (batch.size, SR) and batch.labels.shape == (batch.size,)
        assert sum(batch.size for batch in batches) == len(dataset) - 2
        assert sorted(item.path for item in report.files) == sorted([str(truncated), str(text)])
        summary = report.summary()
        assert summary.startswith("skipped 2 bad files: ")
        assert f"{truncated} (truncated" in summary and f"{text} (not a readable audio file" in summary
        runs.append(batches)
    # Same items, crops and silence whatever the number of workers.
    for one, two in zip(*runs, strict=True):
        assert one.paths == two.paths and torch.equal(one.waveforms, two.waveforms)


def test_collate_of_only_bad_items_is_an_empty_batch() -> None:
    batch = collate_skipping_bad([Skipped("a.wav", "broken"), Skipped("b.wav", "broken")])
    assert batch.size == 0 and batch.waveforms.shape[0] == 0 and len(batch.skipped) == 2
    report = SkipReport()
    assert report.summary() == ""
    report.add(batch.skipped + [Skipped("a.wav", "broken")] + [Skipped(f"{n}.wav", "x") for n in range(30)])
    assert len(report) == 32
    assert (
        report.summary(max_listed=3)
        == "skipped 32 bad files: a.wav (broken), b.wav (broken), 0.wav (x), and 29 more"
    )
    report.clear()
    assert len(report) == 0


def test_speech_commands_layout_errors(tmp_path: Path, sc_root: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        SpeechCommands(tmp_path / "nowhere")
    write(tmp_path / "flat" / "yes" / "a.wav", sine(440, 0.1, SR))
    (tmp_path / "flat" / "testing_list.txt").write_text("")
    with pytest.raises(UserError, match="validation_list.txt is missing"):
        SpeechCommands(tmp_path / "flat")
    (tmp_path / "flat" / "validation_list.txt").write_text("yes/a.wav\n")
    with pytest.raises(UserError, match="test split .* is empty"):
        SpeechCommands(tmp_path / "flat", "test")
    with pytest.raises(UserError, match="no _background_noise_/ audio"):
        SpeechCommands(tmp_path / "flat", "validation", "12", keywords=("yes",))
    assert (
        len(SpeechCommands(tmp_path / "flat", "validation", "12", keywords=("yes",), silence_percentage=0))
        == 1
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "validation_list.txt").write_text("")
    (tmp_path / "empty" / "testing_list.txt").write_text("")
    with pytest.raises(UserError, match="no word folders"):
        SpeechCommands(tmp_path / "empty")
    with pytest.raises(UserError, match="split"):
        SpeechCommands(sc_root, "dev")
    with pytest.raises(UserError, match="task"):
        SpeechCommands(sc_root, task="20")


def test_background_noises(sc_root: Path, tmp_path: Path) -> None:
    noises = background_noises(sc_root)
    assert [n.shape for n in noises] == [(NOISE_SAMPLES,), (NOISE_SAMPLES,)]
    folder = tmp_path / "noise"
    write(folder / "a.flac", sine(100.0, 0.5, 8000), 8000)
    write_text(folder / "b.wav")
    with pytest.warns(UserWarning, match="b.wav"):
        noises = background_noises(folder)
    assert [n.shape for n in noises] == [(SR // 2,)]
    (tmp_path / "silent").mkdir()
    with pytest.raises(UserError, match="no usable audio"):
        background_noises(tmp_path / "silent")


# ---------------------------------------------------------------------------------------------
# Folder, manifest, ESC-50, unlabelled


def test_folder_dataset(tmp_path: Path) -> None:
    write(tmp_path / "dog" / "a.flac", sine(300.0, 0.5, 22050), 22050)
    write(tmp_path / "dog" / "sub" / "b.wav", sine(300.0, 2.0, SR), SR)
    write(tmp_path / "cat" / "c.ogg", sine(500.0, 0.5, SR), SR)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "empty_class").mkdir()
    dataset = FolderDataset(tmp_path, clip_samples=SR)
    assert dataset.labels == ["cat", "dog"] and len(dataset) == 3
    assert [(Path(p).name, label) for p, label in dataset.items] == [
        ("c.ogg", 0),
        ("a.flac", 1),
        ("b.wav", 1),
    ]
    centre = dataset[2].waveform.numpy()
    np.testing.assert_array_equal(centre, load_audio(dataset.items[2][0])[SR // 2 : SR // 2 + SR])
    with pytest.raises(UserError, match="no class folders"):
        FolderDataset(tmp_path / "empty_class")


def test_manifest_dataset(tmp_path: Path) -> None:
    write(tmp_path / "audio" / "a.wav", sine(300.0, 0.5, SR), SR)
    write(tmp_path / "audio" / "b.wav", sine(300.0, 0.5, SR), SR)
    write(tmp_path / "audio" / "c.wav", sine(300.0, 0.5, SR), SR)
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label\naudio/a.wav,speaker2\naudio/b.wav,speaker1\naudio/c.wav,speaker2\n")
    dataset = ManifestDataset(manifest, clip_samples=SR // 4)
    assert dataset.labels == ["speaker1", "speaker2"]
    assert [label for _, label in dataset.items] == [1, 0, 1]
    assert dataset[1].waveform.shape == (SR // 4,) and dataset[1].path == str(tmp_path / "audio" / "b.wav")
    fixed = ManifestDataset(manifest, labels=["speaker2", "speaker1", "speaker3"])
    assert [label for _, label in fixed.items] == [0, 1, 0]
    with pytest.raises(UserError, match="not in the label list: speaker2"):
        ManifestDataset(manifest, labels=["speaker1"])
    (tmp_path / "bad.csv").write_text("file,class\na.wav,x\n")
    with pytest.raises(UserError, match="path,label"):
        ManifestDataset(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(UserError, match="lists no files"):
        ManifestDataset(tmp_path / "empty.csv")
    with pytest.raises(UserError, match="does not exist"):
        ManifestDataset(tmp_path / "missing.csv")


def test_esc50_fold_selection(tmp_path: Path) -> None:
    categories = ["dog", "rain", "crying_baby"]
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in enumerate(categories):
            name = f"{fold}-{target}-A-{target}.wav"
            write(tmp_path / "audio" / name, sine(200.0 + 100 * target, 0.1, 44100), 44100)
            rows.append(f"{name},{fold},{target},{category},False,x,A")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    train, test = ESC50(tmp_path, folds=[1, 2, 3, 4]), ESC50(tmp_path, folds=[5])
    assert train.labels == categories and len(train) == 12 and len(test) == 3
    assert {Path(p).name.split("-")[0] for p, _ in train.items} == {"1", "2", "3", "4"}
    assert [(Path(p).name, label) for p, label in test.items] == [
        ("5-0-A-0.wav", 0),
        ("5-1-A-1.wav", 1),
        ("5-2-A-2.wav", 2),
    ]
    assert test[0].waveform.shape == (5 * SR,)
    with pytest.raises(UserError, match="folds"):
        ESC50(tmp_path, folds=[6])
    with pytest.raises(UserError, match="meta/esc50.csv is missing"):
        ESC50(tmp_path / "audio")


def test_unlabelled_audio_crops(tmp_path: Path) -> None:
    long = np.linspace(-0.9, 0.9, int(3.2 * SR), dtype=np.float32)
    write(tmp_path / "a" / "long.wav", long, SR, "FLOAT")
    write(tmp_path / "b" / "c" / "short.flac", sine(300.0, 0.5, SR), SR)
    write(tmp_path / "b" / "hi.wav", sine(300.0, 1.0, 48000), 48000)
    write_text(tmp_path / "b" / "broken.wav")
    dataset = UnlabelledAudio(tmp_path, clip_samples=SR)
    assert dataset.labels == []
    names = [Path(p).name for p, _ in dataset.items]
    assert names == ["long.wav"] * 3 + ["broken.wav", "short.flac", "hi.wav"]
    crops = [dataset[i] for i in range(3)]
    for crop in crops:
        clip = crop.waveform.numpy()
        start = int(np.argmin(np.abs(long - clip[0])))
        np.testing.assert_array_equal(clip, long[start : start + SR])
        assert crop.label == -1
    assert isinstance(dataset[3], Skipped) and "broken.wav" in dataset[3].path
    assert dataset[5].waveform.shape == (SR,)
    short = dataset[4].waveform.numpy()
    assert short[: SR // 2].any() and not short[SR // 2 :].any()
    assert np.array_equal(dataset[0].waveform, crops[0].waveform)
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[0].waveform, crops[0].waveform)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        UnlabelledAudio(tmp_path / "nothing", SR)
