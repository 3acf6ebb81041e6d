"""Continuous-stream evaluation: event matching, the threshold sweep, the stream builder, the CLI.

The builder runs on a tiny espeak-ng data set (2 keywords, 2 unknown words, 4 speakers); the CLI
runs end to end on a short stream with a small model exported here.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssamba_stream.errors import UserError
from ssamba_stream.evaluation import (
    DEFAULT_THRESHOLDS,
    DEFAULT_TOLERANCE,
    NOTHING_SAID,
    Occurrence,
    StreamPosteriors,
    false_accepts,
    match_events,
    operating_point,
    read_ground_truth,
    sweep,
    tune_posteriors,
)
from ssamba_stream.evaluation.tuning import _Option, _spend_false_accepts
from ssamba_stream.kws import DetectorConfig, Event
from ssamba_training import stream_builder, synth
from ssamba_training.stream_builder import SAMPLE_RATE, StreamConfig, build_stream, word_span

from audio_fixtures import ESPEAK, SKIP_REASON

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "ssamba-stream"
LABELS = ["yes", "no", "_silence_", "_unknown_"]
YES = Occurrence(1.0, 1.5, "yes")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason=SKIP_REASON)


# ------------------------------------------------------------------------------------------ matching


def events(*pairs: tuple[float, str]) -> list[Event]:
    return [Event(time, label, 0.9) for time, label in pairs]


@pytest.mark.parametrize(
    ("fired", "hits", "false_accepts", "wrong_label"),
    [
        (events((1.6, "yes")), 1, 0, 0),  # after the word, inside the tolerance
        (events((2.5, "yes")), 1, 0, 0),  # exactly at end + tolerance
        (events((2.6, "yes")), 0, 1, 0),  # too late: a miss and a false accept
        (events((0.9, "yes")), 0, 1, 0),  # before the word began
        (events((1.6, "no")), 0, 1, 1),  # wrong keyword
        (events((1.6, "yes"), (2.2, "yes")), 1, 1, 0),  # one word, two events
        ([], 0, 0, 0),
    ],
)
def test_matching(fired: list[Event], hits: int, false_accepts: int, wrong_label: int) -> None:
    matching = match_events(fired, [YES], tolerance=1.0)
    assert (matching.hits, matching.false_accepts, matching.wrong_label) == (hits, false_accepts, wrong_label)


def test_matching_gives_an_event_to_the_word_that_ends_first() -> None:
    # The event at 1.2 s lies in both windows; taking the second word would leave 2.0 s unmatched.
    words = [Occurrence(0.0, 0.5, "yes"), Occurrence(1.0, 1.4, "yes")]
    matching = match_events(events((1.2, "yes"), (2.0, "yes")), words, tolerance=1.0)
    assert (matching.hits, matching.false_accepts) == (2, 0)


def test_false_accepts_name_the_word_they_fired_on() -> None:
    town, yes_again = Occurrence(3.0, 3.4, "_unknown_", "town"), Occurrence(3.6, 4.0, "yes")
    words = [YES, town, yes_again]
    fired = events((1.6, "yes"), (2.0, "no"), (3.5, "down"), (4.2, "yes"), (4.3, "no"), (9.0, "yes"))
    found = false_accepts(fired, words, [YES, yes_again], tolerance=1.0)
    # 2.0 s: a wrong keyword on "yes"; 3.5 s: on "town"; 4.3 s: in both windows, the later word counts
    assert [(fa.time, fa.label, fa.said) for fa in found] == [
        (2.0, "no", "yes"),
        (3.5, "down", "town"),
        (4.3, "no", "yes"),
        (9.0, "yes", NOTHING_SAID),
    ]
    assert match_events(fired, [YES, yes_again], tolerance=1.0).false_accepts == len(found)


def test_operating_point_rates_scale_with_duration() -> None:
    words = [YES, Occurrence(5.0, 5.4, "no"), Occurrence(9.0, 9.5, "yes")]
    fired = events((1.7, "yes"), (3.0, "yes"), (5.5, "yes"), (7.0, "no"))
    half = operating_point(0.5, fired, words, hours=0.5, tolerance=1.0)
    assert (half.hits, half.misses, half.false_accepts, half.wrong_label) == (1, 2, 3, 1)
    assert half.frr == pytest.approx(2 / 3) and half.fa_per_hour == pytest.approx(6.0)
    assert operating_point(0.5, fired, words, hours=2.0, tolerance=1.0).fa_per_hour == pytest.approx(1.5)


# --------------------------------------------------------------------------------------------- sweep


def _posteriors(seconds: float = 600.0, seed: int = 0) -> tuple[StreamPosteriors, list[Occurrence]]:
    """Random posteriors with a keyword peak (of random height) at each labelled word."""
    rng = np.random.default_rng(seed)
    block = 0.16
    values = rng.dirichlet(np.ones(len(LABELS)), size=int(seconds / block))
    words = []
    for start in np.arange(2.0, seconds - 3.0, 3.0):
        label = LABELS[int(rng.integers(2))]
        words.append(Occurrence(float(start), float(start) + 0.5, label))
        peak = int((start + 0.6) / block)
        values[peak : peak + 3] = 0.0
        values[peak : peak + 3, LABELS.index(label)] = rng.uniform(0.2, 1.0)
        values[peak : peak + 3, -1] = 1.0 - values[peak : peak + 3, LABELS.index(label)]
    return StreamPosteriors(values, tuple(LABELS), block, seconds), words


def test_sweep_is_monotone_without_refractory_period() -> None:
    # Without a refractory period the events at a higher threshold are a subset of those at a lower one.
    posteriors, words = _posteriors()
    points = sweep(posteriors, DetectorConfig(refractory_seconds=0.0), words)
    assert [p.threshold for p in points] == list(DEFAULT_THRESHOLDS)
    frr = [p.frr for p in points]
    false_accepts = [p.false_accepts for p in points]
    assert frr == sorted(frr) and false_accepts == sorted(false_accepts, reverse=True)
    assert frr[0] < 0.1 < 0.9 < frr[-1] and false_accepts[0] > 10 * max(false_accepts[-1], 1)


def test_sweep_replaces_per_label_thresholds_and_keeps_counts_consistent() -> None:
    posteriors, words = _posteriors(seconds=300.0, seed=1)
    strict = DetectorConfig(thresholds={"yes": 1.0, "no": 1.0})
    assert posteriors.events(strict) == []
    points = sweep(posteriors, strict, words, thresholds=[0.3, 0.6])
    assert points[0].hits > 0 and all(p.hits + p.misses == len(words) == p.keywords for p in points)
    assert all(p.hours == pytest.approx(300 / 3600) for p in points)


def _two_keyword_stream(seconds: float = 900.0) -> tuple[StreamPosteriors, list[Occurrence]]:
    """'yes' peaks low (0.35-0.6) on a clean background; 'no' peaks high (0.85-1) but also rises to
    0.5-0.8 between words: no single threshold serves both, one per keyword does."""
    rng = np.random.default_rng(3)
    block = 0.16
    values = np.tile([0.02, 0.02, 0.02, 0.94], (int(seconds / block), 1))
    words = []
    for index, start in enumerate(np.arange(2.0, seconds - 6.0, 6.0)):
        label = LABELS[index % 2]
        words.append(Occurrence(float(start), float(start) + 0.5, label))
        peak = int((start + 0.6) / block)
        height = rng.uniform(0.35, 0.6) if label == "yes" else rng.uniform(0.85, 1.0)
        values[peak : peak + 3] = [(1 - height) / 3] * 4
        values[peak : peak + 3, LABELS.index(label)] = height
        spike = int((start + 3.5) / block)  # 2 s after the word's window has closed
        values[spike : spike + 3] = [0.0, rng.uniform(0.5, 0.8), 0.0, 0.0]
        values[spike : spike + 3, -1] = 1 - values[spike : spike + 3, 1]
    return StreamPosteriors(values, tuple(LABELS), block, seconds), words


def test_per_keyword_thresholds_beat_one_threshold_when_keywords_differ() -> None:
    posteriors, words = _two_keyword_stream()
    base = DetectorConfig(smoothing_blocks=1)
    single, point = tune_posteriors(posteriors, base, words, max_fa_per_hour=1.0, smoothing=[1])
    assert single.thresholds == {} and point.false_accepts == 0 and point.frr == pytest.approx(0.5, abs=0.02)
    tuned, best = tune_posteriors(
        posteriors, base, words, max_fa_per_hour=1.0, smoothing=[1], per_keyword=True
    )
    assert best.frr == 0.0 and best.false_accepts == 0
    assert tuned.thresholds["yes"] <= 0.35 and tuned.thresholds["no"] > 0.8
    replayed = operating_point(
        tuned.threshold, posteriors.events(tuned), words, best.hours, DEFAULT_TOLERANCE
    )
    assert replayed == best  # the stored defaults give exactly the reported point


def test_false_accept_budget_goes_where_it_buys_the_most_hits() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        options = {
            label: [_Option(t, int(rng.integers(0, 9)), int(rng.integers(0, 4))) for t in (0.5, 0.7, 0.9)]
            for label in ("a", "b", "c")
        }
        budget = int(rng.integers(0, 6))
        chosen = _spend_false_accepts(options, budget)
        plans = [
            combo for combo in itertools.product(*options.values())
            if sum(o.false_accepts for o in combo) <= budget
        ]  # fmt: skip
        if not plans:
            assert chosen is None
            continue
        fewest = min(sum(o.misses for o in combo) for combo in plans)
        picked = [next(o for o in options[label] if o.threshold == chosen[label]) for label in options]
        assert sum(o.misses for o in picked) == fewest and sum(o.false_accepts for o in picked) <= budget


# -------------------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("begin,end,label\n1,2,yes\n", "header row start,end,label"),
        ("", "header row start,end,label"),
        ("start,end,label,speaker\n1,2,yes,a\n", r"header row start,end,label\[,word\]"),
        ("start,end,label,word\n1,2,yes\n", "line 2: expected start,end,label,word"),
        ("start,end,label\n1,x,yes\n", "line 2: start and end must be numbers"),
        ("start,end,label\n1,2,yes\n3,2.5,no\n", "line 3: need 0 <= start <= end"),
        ("start,end,label\n1,2\n", "line 2: expected start,end,label"),
        ("start,end,label\n1,nan,yes\n", "line 2: need 0 <= start <= end"),
    ],
)
def test_bad_ground_truth_is_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        read_ground_truth(path)
    assert "\n" not in str(error.value)


def test_ground_truth_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("start,end,label\n1.0,1.5,yes\n\n3.25,3.5,_unknown_\n")
    assert read_ground_truth(path) == [YES, Occurrence(3.25, 3.5, "_unknown_")]
    path.write_text("start,end,label,word\n1.0,1.5,yes,yes\n3.25,3.5,_unknown_,town\n")
    assert [o.said for o in read_ground_truth(path)] == ["yes", "town"]
    with pytest.raises(UserError, match="not found"):
        read_ground_truth(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="is a directory, not a file"):
        read_ground_truth(tmp_path)


# ------------------------------------------------------------------------------------------- builder


def test_word_span_finds_the_audible_part() -> None:
    rng = np.random.default_rng(0)
    clip = (rng.standard_normal(SAMPLE_RATE) * 1e-3).astype(np.float32)
    clip[4000:8000] += 0.3 * np.sin(np.arange(4000) * 0.2).astype(np.float32)
    start, end = word_span(clip)
    assert abs(start - 4000) <= 160 and abs(end - 8000) <= 160
    assert word_span(np.zeros(SAMPLE_RATE, np.float32)) is None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    out = tmp_path_factory.mktemp("synth") / "sc"
    args = [
        "--out", str(out), "--keywords", "yes,no", "--unknown-words", "yet,cup", "--voices", "en-us",
        "--variants", "m3,f2,klatt2", "--per-voice", "2", "--val-voices", "1", "--test-voices", "2",
        "--noise-clips", "2", "--noise-seconds", "2", "--jobs", "1", "--seed", "3",
    ]  # fmt: skip
    assert synth.main(args) == 0
    return out


def _config(dataset: Path, out: Path, **changes: object) -> StreamConfig:
    settings = {"minutes": 0.5, "keywords": ("yes", "no"), "keyword_share": 0.6, "seed": 1, **changes}
    return StreamConfig(dataset, out, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stream(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> stream_builder.BuiltStream:
    return build_stream(_config(dataset, tmp_path_factory.mktemp("stream") / "s.wav"))


@needs_espeak
def test_stream_layout_and_labels(stream: stream_builder.BuiltStream) -> None:
    info = sf.info(stream.wav)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert info.frames == stream.samples == 30 * SAMPLE_RATE
    with open(stream.csv, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["start", "end", "label", "word"]
    assert [r["label"] for r in rows] == [p.label for p in stream.placements]
    assert [r["word"] for r in rows] == [Path(p.path).parent.name for p in stream.placements]
    assert all(r["word"] == r["label"] for r in rows if r["label"] != "_unknown_")
    assert {r["word"] for r in rows if r["label"] == "_unknown_"} == {"yet", "cup"}
    assert {r["label"] for r in rows} == {"yes", "no", "_unknown_"} and stream.keyword_count >= 3
    spans = [(float(r["start"]), float(r["end"])) for r in rows]
    assert all(0 <= s < e <= 30.0 for s, e in spans)
    assert all(e0 < s1 for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False))


@needs_espeak
def test_stream_uses_only_held_out_voices(dataset: Path, stream: stream_builder.BuiltStream) -> None:
    testing = set((dataset / "testing_list.txt").read_text().split())
    used = {Path(p.path).relative_to(dataset).as_posix() for p in stream.placements}
    assert used <= testing and len(used) > 3


@needs_espeak
def test_spans_are_the_words_found_by_energy(dataset: Path, stream: stream_builder.BuiltStream) -> None:
    with open(dataset / synth.CLIPS_CSV, newline="") as file:
        truth = {row["file"]: (int(row["start"]), int(row["end"])) for row in csv.DictReader(file)}
    audio, _ = sf.read(stream.wav, dtype="float64")
    outside = np.ones(audio.size, bool)
    for p in stream.placements:
        start, end = truth[Path(p.path).relative_to(dataset).as_posix()]
        # synth knows where it put each word: the energy span agrees within 30 ms
        assert abs(p.start - p.offset - start) <= 480 and abs(p.end - p.offset - end) <= 480
        outside[p.offset : p.offset + SAMPLE_RATE] = False
    noise_power = np.mean(audio[outside] ** 2)
    word_power = np.median([np.mean(audio[p.start : p.end] ** 2) for p in stream.placements])
    assert 10 * np.log10(word_power / noise_power) == pytest.approx(10.0, abs=1.5)  # the default SNR


@needs_espeak
def test_stream_is_deterministic_for_a_seed(
    dataset: Path, stream: stream_builder.BuiltStream, tmp_path: Path
) -> None:
    again = build_stream(_config(dataset, tmp_path / "again.wav"))
    assert again.wav.read_bytes() == stream.wav.read_bytes()
    assert again.csv.read_text() == stream.csv.read_text()
    other = build_stream(_config(dataset, tmp_path / "other.wav", seed=2, snr_db=float("inf")))
    assert other.csv.read_text() != stream.csv.read_text()
    audio, _ = sf.read(other.wav, dtype="float32")
    assert not audio[: other.placements[0].offset].any()  # no noise: gaps are silent


@needs_espeak
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/missing"], "does not exist"),
        (["--data", "{data}", "--keywords", "yes,marvin"], "marvin have no files in the testing split"),
        (["--data", "{tmp}"], "testing_list.txt is missing"),
        (["--data", "{data}", "--keyword-share", "1.5"], "--keyword-share must be between 0 and 1"),
    ],
)
def test_builder_bad_arguments(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "validation_list.txt").write_text("")
    args = [a.format(tmp=tmp_path, data=dataset) for a in args]
    assert stream_builder.main([*args, "--out", str(tmp_path / "s.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "s.wav").exists()


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from ssamba_export.onnx_export import export_onnx
    from ssamba_stream.model.checkpoint import save_model
    from ssamba_stream.model.registry import build_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    checkpoint = save_model(build_model("ssamba-kws", depth=2, num_classes=4, labels=LABELS), folder / "ckpt")
    export_onnx(checkpoint, folder / "kws.onnx")
    return folder / "kws.onnx"


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT)


@needs_espeak
def test_cli_end_to_end(stream: stream_builder.BuiltStream, model: Path, tmp_path: Path) -> None:
    result = run_cli("evaluate", "--stream", stream.wav, "--model", model, "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert "defaults (threshold 0.50, smoothing 2): FRR" in result.stdout and "FA/h" in result.stdout
    missed = re.search(r"missed at the defaults, by keyword: (.*)", result.stdout).group(1)
    counts = {label: (int(m), int(n)) for label, m, n in re.findall(r"(\w+) (\d+)/(\d+)", missed)}
    assert {label: n for label, (_, n) in counts.items()} == {
        "yes": stream.count("yes"),
        "no": stream.count("no"),
    }
    assert "FRR at <= 1 FA/h" in result.stdout
    png = tmp_path / "report" / "s_det.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "report" / "s_sweep.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(r["threshold"]) for r in rows] == list(DEFAULT_THRESHOLDS)

    as_json = run_cli("evaluate", "--stream", stream.wav, "--labels", stream.csv, "--model", model, "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["keywords"] == stream.keyword_count and report["other_words"] == stream.count("_unknown_")
    assert report["minutes"] == pytest.approx(0.5) and len(report["sweep"]) == len(DEFAULT_THRESHOLDS)
    assert Path(report["det_plot"]) == stream.wav.parent / "s_det.png"


@needs_espeak
def test_cli_names_the_words_false_accepts_fired_on(
    stream: stream_builder.BuiltStream, model: Path, tmp_path: Path
) -> None:
    # The untrained model never reaches its default 0.5: a copy that fires at 0.05 makes false accepts.
    eager = tmp_path / "eager.onnx"
    eager.write_bytes(model.read_bytes())
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["detector"]["threshold"] = 0.05
    eager.with_suffix(".json").write_text(json.dumps(sidecar))
    result = run_cli("evaluate", "--stream", stream.wav, "--model", eager, "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    fired_on = report["default_false_accepts"]
    assert len(fired_on) == report["default"]["false_accepts"] > 0
    assert {fa["said"] for fa in fired_on} <= {"yes", "no", "yet", "cup", NOTHING_SAID}
    assert [fa["time"] for fa in fired_on] == sorted(fa["time"] for fa in fired_on)
    text = run_cli("evaluate", "--stream", stream.wav, "--model", eager, "--out", tmp_path).stdout
    listed = re.search(r"false accepts at the defaults, by what was said: (.*)", text)
    pairs = re.findall(r"'(?:yes|no)' on (?:yes|no|yet|cup|\(no word\)) x(\d+)", listed.group(1))
    assert sum(map(int, pairs)) == len(fired_on) or "more" in listed.group(1), text


@needs_espeak
def test_cli_detector_options_score_like_a_sidecar_holding_them(
    stream: stream_builder.BuiltStream, model: Path, tmp_path: Path
) -> None:
    """`evaluate --threshold T --smoothing N` gives what a model whose sidecar says T and N gives."""
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(model.read_bytes())
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["detector"].update(threshold=0.05, smoothing_blocks=3)
    edited.with_suffix(".json").write_text(json.dumps(sidecar))
    from_sidecar = json.loads(run_cli("evaluate", "--stream", stream.wav, "--model", edited, "--out", tmp_path,
                                      "--json").stdout)  # fmt: skip
    given = run_cli("evaluate", "--stream", stream.wav, "--model", model, "--out", tmp_path, "--json",
                    "--threshold", "0.05", "--smoothing", "3")  # fmt: skip
    assert given.returncode == 0, given.stderr
    report = json.loads(given.stdout)
    assert report["detector_given"] and not from_sidecar["detector_given"]
    assert report["detector"]["smoothing_blocks"] == 3 and report["detector"]["threshold"] == 0.05
    for key in ("default", "sweep", "default_false_accepts", "misses_by_keyword"):
        assert report[key] == from_sidecar[key], key
    assert report["default"]["false_accepts"] > 0  # the setting fires: the comparison above bites
    text = run_cli(
        "evaluate", "--stream", stream.wav, "--model", model, "--out", tmp_path, "--smoothing", "3"
    )
    assert "given setting (threshold 0.50, smoothing 3): FRR" in text.stdout, text.stderr


@needs_espeak
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("start,end,label\n1.0,oops,yes\n", "start and end must be numbers"),
        ("start,end,label\n1.0,1.5,marvin\n", "names marvin, not labels of this model"),
        ("start,end,label\n1.0,99.0,yes\n", "labels go to 99.00 s"),
        ("start,end,label\n1.0,1.5,_unknown_\n", "no keyword occurrences"),
    ],
)
def test_cli_bad_labels_exit_2_in_one_line(
    stream: stream_builder.BuiltStream, model: Path, tmp_path: Path, labels: str, message: str
) -> None:
    (tmp_path / "bad.csv").write_text(labels)
    result = run_cli("evaluate", "--stream", stream.wav, "--labels", tmp_path / "bad.csv", "--model", model)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--out", ROOT / "README.md"), "is a file, not a folder"),
        (("--out", "/sys/ssamba-report"), "cannot write to --out /sys/ssamba-report"),
        (("--thresholds", "marvin=0.5"), "marvin, not a label of this model"),
    ],
)
def test_cli_checks_its_options_before_evaluating(
    model: Path, tmp_path: Path, args: tuple, message: str
) -> None:
    """Bad --out or --thresholds fail at once, before the stream (absent here) is even opened."""
    result = run_cli("evaluate", "--stream", tmp_path / "absent.wav", "--model", model, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_cli_shows_progress_on_a_long_stream(model: Path, tmp_path: Path) -> None:
    wav = tmp_path / "long.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.05, 16000 * 6 * 60), 16000, subtype="PCM_16")
    wav.with_suffix(".csv").write_text("start,end,label\n1.0,1.5,yes\n")
    result = run_cli("evaluate", "--stream", wav, "--model", model, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"long.wav: [\d.]+ of 6.0 min \((\d+)%\)", result.stderr)
    assert steps == [str(p) for p in range(10, 100, 10)], result.stderr


# Run the CLI in a child interpreter where torch and matplotlib cannot be imported.
BLOCK = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "matplotlib"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, _Block())
from ssamba_stream.cli import main
sys.argv = ["ssamba-stream", *sys.argv[1:]]
main()
"""


def test_cli_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    args = ["evaluate", "--stream", str(tmp_path / "s.wav")]
    result = subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["ssamba-stream: error: install matplotlib: pip install 'ssamba-stream[eval]'"]


@needs_espeak
def test_tune_stores_the_best_setting_in_the_sidecar(
    stream: stream_builder.BuiltStream, model: Path, tmp_path: Path
) -> None:
    from ssamba_stream.evaluation import SMOOTHING_CHOICES, evaluate_stream, tune_detector
    from ssamba_stream.kws import DetectorConfig
    from ssamba_stream.runtime.spec import load_spec

    copy = tmp_path / "kws.onnx"
    copy.write_bytes(model.read_bytes())
    copy.with_suffix(".json").write_text(model.with_suffix(".json").read_text())
    fingerprint = load_spec(copy).fingerprint
    allowed = 1e9  # a random model fires often: any rate is allowed, so the choice is the lowest FRR
    config, point = tune_detector(stream.wav, stream.csv, copy, max_fa_per_hour=allowed)
    assert config.smoothing_blocks in SMOOTHING_CHOICES and point.threshold == config.threshold
    default = evaluate_stream(stream.wav, stream.csv, copy)
    assert point.frr <= min(p.frr for p in default.sweep)  # smoothing 2 (the default) is one of the choices

    result = subprocess.run(
        [str(Path(sys.executable).parent / "ssamba-export"), "tune", str(copy), "--stream", str(stream.wav),
         "--max-fa-per-hour", str(allowed)], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = load_spec(copy)
    stored = DetectorConfig.from_sidecar(spec.detector)
    assert (stored.threshold, stored.smoothing_blocks) == (config.threshold, config.smoothing_blocks)
    assert spec.fingerprint == fingerprint  # the graph is untouched: states still move between sessions

    per_keyword = subprocess.run(
        [str(Path(sys.executable).parent / "ssamba-export"), "tune", str(copy), "--stream", str(stream.wav),
         "--max-fa-per-hour", str(allowed), "--per-keyword"], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert per_keyword.returncode == 0, per_keyword.stderr
    stored = DetectorConfig.from_sidecar(load_spec(copy).detector)
    frr = float(re.search(r"FRR ([\d.]+)%", per_keyword.stdout).group(1)) / 100
    assert frr <= point.frr + 0.0005  # per keyword is tried besides one threshold: never worse (0.1% printed)
    assert not stored.thresholds or set(stored.thresholds) == {"yes", "no"}

    impossible = subprocess.run(
        [str(Path(sys.executable).parent / "ssamba-export"), "tune", str(copy), "--stream", str(stream.wav),
         "--max-fa-per-hour", "-1"], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert impossible.returncode == 2 and "no setting reaches" in impossible.stderr
    assert "Traceback" not in impossible.stderr


@needs_espeak
def test_snr_benchmark_scores_the_same_words_at_each_noise_level(
    dataset: Path, model: Path, tmp_path: Path
) -> None:
    script = ROOT / "benchmarks" / "kws_snr.py"
    args = [sys.executable, str(script), "--data", dataset, "--model", model, "--snr-db", "inf,0",
            "--tune-minutes", "0.5", "--test-minutes", "0.5", "--max-fa-per-hour", "100000",
            "--work", tmp_path / "streams", "--csv", tmp_path / "snr.csv"]  # fmt: skip
    first = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert [line.split("|")[0].strip() for line in first.stdout.splitlines()[1:]] == ["clean", "0 dB"]
    streams = tmp_path / "streams"
    for split, seed in (("validation", 5), ("testing", 1)):
        clean, noisy = (streams / f"{split}-0.5min-{level}-seed{seed}.wav" for level in ("clean", "0db"))
        assert clean.with_suffix(".csv").read_text() == noisy.with_suffix(".csv").read_text()  # same words
        assert not np.array_equal(sf.read(clean)[0], sf.read(noisy)[0])
    with open(tmp_path / "snr.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["snr_db"]) for r in rows] == [float("inf"), 0.0]
    assert any(
        float(r["tuned_frr"]) < 1 for r in rows
    )  # the random model fires somewhere: the check below bites
    for row in rows:
        if float(row["tuned_fa_per_hour"]) <= 100000:  # the tuned setting is then one the in-sample best saw
            assert float(row["in_sample_frr"]) <= float(row["tuned_frr"])
    built = {path: path.stat().st_mtime_ns for path in streams.iterdir()}
    again = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0 and again.stdout == first.stdout  # the streams are reused, not rebuilt
    assert {path: path.stat().st_mtime_ns for path in streams.iterdir()} == built
