"""Long labelled test streams for continuous keyword-spotting evaluation (FRR at FA/h, design §7).

Clip accuracy says little about a spotter that listens all day: what users feel is how many
keywords it misses and how often it fires on nothing. This builds the audio that measures it from
a data set in the Speech Commands v2 layout: keyword clips of one held-out split (default the
testing list, whose voices training never heard), interleaved with unknown words of the same
split, separated by random silences, with ``_background_noise_`` mixed underneath at a set SNR.
``S.csv`` next to ``S.wav`` lists every word as ``start,end,label,word`` in seconds: the audible span
found by energy (not the 1 s clip bounds), unknown words labelled ``_unknown_``, and in a fourth
column the word spoken, so that false accepts can be traced to the words that caused them.

Usage::

    python training/stream_builder.py --data data/sc12 --out streams/test60.wav --minutes 60

The same arguments always give the same files. The WAV is written piece by piece, so an hour
never sits in memory.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ssamba_stream.audio import load_audio
from ssamba_stream.errors import UserError
from ssamba_training.data import KWS12_KEYWORDS, UNKNOWN_LABEL, SpeechCommands, background_noises
from ssamba_training.synth.cli import Parser, name_list, word_list
from ssamba_training.synth.common import SynthError
from ssamba_training.synth.dataset import CLIPS_CSV

SAMPLE_RATE = 16000
SPLITS = {"testing": "test", "validation": "validation", "train": "train"}  # CLI name -> SpeechCommands split
GAP_SECONDS = (0.5, 3.0)  # silence between consecutive clips
FRAME = SAMPLE_RATE // 100  # 10 ms energy frames for word spans
# A frame is part of the word when it is this far above the clip's noise floor (10th percentile
# frame) and within this range of its loudest frame; checked against synth's exact word bounds.
SPAN_ABOVE_FLOOR_DB = 6.0
SPAN_BELOW_PEAK_DB = 50.0
MIN_DYNAMIC_DB = 12.0  # quieter clips hold no audible word
CROSSFADE = SAMPLE_RATE // 100  # joins between background-noise segments
MIN_NOISE_SAMPLES = SAMPLE_RATE  # shorter noise files are too short to loop without audible seams


@dataclass(frozen=True)
class StreamConfig:
    """What ``build_stream`` writes; ``out`` is the WAV, its labels go to ``out`` with suffix ``.csv``."""

    data: Path
    out: Path
    split: str = "testing"
    minutes: float = 60.0
    snr_db: float = 10.0  # median word power over noise power; inf: no noise
    keywords: tuple[str, ...] = KWS12_KEYWORDS
    keyword_share: float = 0.3  # fraction of the words that are keywords, the rest unknown words
    seed: int = 0
    engines: tuple[
        str, ...
    ] = ()  # only clips of these engines or speakers (``rhvoice``, ``rhvoice:bdl``); () = all


@dataclass(frozen=True)
class Placement:
    """One clip in the stream: its source file, label, and sample positions in the stream."""

    path: str
    label: str
    offset: int  # first sample of the whole clip
    start: int  # audible span [start, end)
    end: int

    @property
    def word(self) -> str:
        """The word spoken: the clip's folder in the Speech Commands layout."""
        return Path(self.path).parent.name


@dataclass(frozen=True)
class BuiltStream:
    """What was written: the WAV and CSV, the stream length, and every clip placed in it."""

    wav: Path
    csv: Path
    samples: int
    placements: tuple[Placement, ...]

    def count(self, label: str) -> int:
        return sum(p.label == label for p in self.placements)

    @property
    def keyword_count(self) -> int:
        return len(self.placements) - self.count(UNKNOWN_LABEL)


def word_span(audio: np.ndarray) -> tuple[int, int] | None:
    """[start, end) samples of the audible word in a clip, by frame energy; None for a clip without one.

    The threshold adapts to each clip's own noise floor, so quiet and noisy recordings both work.
    """
    frames = audio.size // FRAME
    if frames == 0:
        return None
    power = np.mean(np.square(audio[: frames * FRAME].reshape(frames, FRAME), dtype=np.float64), axis=1)
    level = 10 * np.log10(power + 1e-12)
    floor, peak = float(np.percentile(level, 10)), float(level.max())
    if peak - floor < MIN_DYNAMIC_DB:
        return None
    loud = np.flatnonzero(level >= max(floor + SPAN_ABOVE_FLOOR_DB, peak - SPAN_BELOW_PEAK_DB))
    return int(loud[0]) * FRAME, (int(loud[-1]) + 1) * FRAME


def _check(config: StreamConfig) -> None:
    if config.split not in SPLITS:
        raise UserError(f"unknown split {config.split!r}: use one of {', '.join(SPLITS)}")
    if not (config.minutes > 0 and math.isfinite(config.minutes)):
        raise UserError(f"--minutes must be a positive number, got {config.minutes}")
    if not 0.0 <= config.keyword_share <= 1.0:
        raise UserError(f"--keyword-share must be between 0 and 1, got {config.keyword_share}")
    if math.isnan(config.snr_db) or config.snr_db == -math.inf:
        raise UserError(f"--snr-db must be a number (inf for no noise), got {config.snr_db}")
    if config.seed < 0:
        raise UserError(f"--seed must be >= 0, got {config.seed}")
    if not config.keywords:
        raise UserError("the keyword list is empty: pass --keywords yes,no,...")


def _source_files(config: StreamConfig) -> dict[str, list[str]]:
    """Keyword (and ``_unknown_``) -> its files in the chosen split; unknown words are the other folders."""
    split = SpeechCommands(config.data, split=SPLITS[config.split], task="35")
    keep = _engine_files(config) if config.engines else None
    by_word: dict[str, list[str]] = {}
    for path, index in split.items:
        if keep is None or f"{Path(path).parent.name}/{Path(path).name}" in keep:
            by_word.setdefault(split.labels[index], []).append(path)
    missing = [word for word in config.keywords if word not in by_word]
    if missing:
        raise UserError(
            f"keyword(s) {', '.join(missing)} have no files in the {config.split} split of {config.data} "
            f"(words there: {', '.join(sorted(by_word))})"
        )
    unknown = sorted(path for word, paths in by_word.items() if word not in config.keywords for path in paths)
    if not unknown and config.keyword_share < 1.0:
        raise UserError(
            f"the {config.split} split of {config.data} has no unknown words: pass --keyword-share 1"
        )
    return {**{word: by_word[word] for word in config.keywords}, UNKNOWN_LABEL: unknown}


def _engine_files(config: StreamConfig) -> set[str]:
    """Files (relative to the data set) spoken by the chosen engines or speakers, from synth_clips.csv."""
    table = Path(config.data) / CLIPS_CSV
    if not table.is_file():
        raise UserError(f"--engines needs a data set built by ssamba_training.synth: {table} is missing")
    with open(table, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if rows and "engine" not in rows[0]:
        raise UserError(f"{table} records no engines (built before engines existed): rebuild the data set")
    chosen = set(config.engines)
    files = {row["file"] for row in rows if row["engine"] in chosen or f"{row['engine']}:{row['speaker']}" in chosen
             or row["speaker"] in chosen}  # fmt: skip
    if not files:
        found = sorted({row["engine"] for row in rows})
        raise UserError(
            f"no clip of {config.data} is spoken by {', '.join(config.engines)} (engines there: {', '.join(found)})"
        )
    return files


def _plan(config: StreamConfig, pools: dict[str, list[str]], samples: int) -> tuple[list[Placement], float]:
    """Clips and gaps until the stream is full; returns the placements and the median word power.

    A clip without an audible word leaves its pool, so every placed clip has a labelled span.
    """
    rng = np.random.default_rng([config.seed, 0])
    pools = {label: list(paths) for label, paths in pools.items()}
    measured: dict[str, tuple[int, int, int, float] | None] = {}  # path -> (length, start, end, power)
    placements, powers, cursor = [], [], 0
    while True:
        offset = cursor + int(rng.uniform(*GAP_SECONDS) * SAMPLE_RATE)
        is_keyword = rng.random() < config.keyword_share
        label = config.keywords[int(rng.integers(len(config.keywords)))] if is_keyword else UNKNOWN_LABEL
        path = pools[label][int(rng.integers(len(pools[label])))]
        if path not in measured:
            measured[path] = _measure(path)
        if measured[path] is None:
            pools[label].remove(path)
            if not pools[label]:
                raise UserError(f"no {label} file of the {config.split} split holds an audible word")
            continue
        length, start, end, power = measured[path]
        if offset + length > samples:
            return placements, float(np.median(powers)) if powers else 0.0
        placements.append(Placement(path, label, offset, offset + start, offset + end))
        powers.append(power)
        cursor = offset + length


def _measure(path: str) -> tuple[int, int, int, float] | None:
    """(length, span start, span end, mean power over the span) of a clip; None without a word."""
    audio = load_audio(path, SAMPLE_RATE)
    span = word_span(audio)
    if span is None:
        return None
    power = float(np.mean(np.square(audio[span[0] : span[1]], dtype=np.float64)))
    return audio.size, span[0], span[1], power


class _NoiseTrack:
    """Endless background noise: unit-RMS noise files from random offsets, joined by crossfades."""

    def __init__(self, noises: Sequence[np.ndarray], rng: np.random.Generator) -> None:
        usable = [n for n in noises if n.size >= MIN_NOISE_SAMPLES and np.any(n)]
        if not usable:
            raise UserError(
                f"no background noise file is at least {MIN_NOISE_SAMPLES / SAMPLE_RATE:g} s of sound"
            )
        self.noises = [
            (n / np.sqrt(np.mean(np.square(n, dtype=np.float64)))).astype(np.float32) for n in usable
        ]
        self.rng = rng
        self.buffer = np.zeros(0, np.float32)

    def take(self, n: int) -> np.ndarray:
        while self.buffer.size < n + CROSSFADE:
            self._append()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _append(self) -> None:
        noise = self.noises[int(self.rng.integers(len(self.noises)))]
        segment = noise[int(self.rng.integers(noise.size // 2)) :]
        if self.buffer.size < CROSSFADE:
            self.buffer = np.concatenate([self.buffer, segment])
            return
        fade = np.linspace(
            0.0, 1.0, CROSSFADE, dtype=np.float32
        )  # equal-power: the two noises are uncorrelated
        joint = self.buffer[-CROSSFADE:] * np.sqrt(1 - fade) + segment[:CROSSFADE] * np.sqrt(fade)
        self.buffer = np.concatenate([self.buffer[:-CROSSFADE], joint, segment[CROSSFADE:]])


def _write_audio(
    path: Path, placements: list[Placement], samples: int, noise: _NoiseTrack | None, gain: float
) -> None:
    """Write the stream clip by clip (silence, clip, ...), with the noise track underneath."""
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16", format="WAV") as wav:
        cursor = 0
        for placement in placements:
            clip = load_audio(placement.path, SAMPLE_RATE)
            _write_piece(wav, np.zeros(placement.offset - cursor, np.float32), noise, gain)
            _write_piece(wav, clip, noise, gain)
            cursor = placement.offset + clip.size
        _write_piece(wav, np.zeros(samples - cursor, np.float32), noise, gain)


def _write_piece(wav: sf.SoundFile, speech: np.ndarray, noise: _NoiseTrack | None, gain: float) -> None:
    mixed = speech + gain * noise.take(speech.size) if noise is not None else speech
    wav.write(np.clip(mixed, -1.0, 1.0).astype(np.float32))


def _write_labels(path: Path, placements: list[Placement]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["start", "end", "label", "word"])
        for p in placements:
            writer.writerow([f"{p.start / SAMPLE_RATE:.4f}", f"{p.end / SAMPLE_RATE:.4f}", p.label, p.word])


def build_stream(config: StreamConfig) -> BuiltStream:
    """Write the stream WAV and its ``start,end,label,word`` CSV; deterministic for ``config.seed``."""
    _check(config)
    samples = round(config.minutes * 60 * SAMPLE_RATE)
    placements, speech_power = _plan(config, _source_files(config), samples)
    if not placements:
        raise UserError(f"{config.minutes:g} minutes is too short for a single word: raise --minutes")
    gain = math.sqrt(speech_power / 10 ** (config.snr_db / 10))
    noise = None
    if gain > 0:
        noise = _NoiseTrack(
            background_noises(config.data, SAMPLE_RATE), np.random.default_rng([config.seed, 1])
        )
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_audio(out, placements, samples, noise, gain)
    _write_labels(out.with_suffix(".csv"), placements)
    return BuiltStream(out, out.with_suffix(".csv"), samples, tuple(placements))


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="stream_builder.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="data set in the Speech Commands v2 layout")
    p.add_argument("--out", type=Path, required=True, help="stream WAV to write (labels go next to it, .csv)")
    p.add_argument(
        "--split", default="testing", choices=sorted(SPLITS), help="held-out split (default testing)"
    )
    p.add_argument("--minutes", type=float, default=60.0, help="stream length")
    p.add_argument(
        "--snr-db", type=float, default=10.0, help="median word power over noise power (inf: none)"
    )
    p.add_argument("--keywords", type=word_list, default=KWS12_KEYWORDS, help="comma-separated")
    p.add_argument("--keyword-share", type=float, default=0.3, help="fraction of the words that are keywords")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", type=name_list, default=(),
                   help="only clips of these engines or speakers, e.g. rhvoice or rhvoice:bdl (default: all)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2: bad arguments or data)."""
    try:
        config = StreamConfig(**vars(_parser().parse_args(argv)))
        built = build_stream(config)
    except (UserError, SynthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {built.wav} ({built.samples / SAMPLE_RATE / 60:g} min: {built.keyword_count} keywords, "
        f"{built.count(UNKNOWN_LABEL)} unknown words, SNR {config.snr_db:g} dB) and {built.csv}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
