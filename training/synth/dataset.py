"""The keyword data set in the Google Speech Commands v2 layout, from many engines and voices.

Keyword spotting needs thousands of clips per word from many speakers. Every speaker (one voice of
one engine, see :mod:`.voices`) says each word several times with random prosody and level;
writing the result exactly as Speech Commands v2 is laid out (``word/<speaker>_nohash_<n>.wav``,
``_background_noise_/``, ``validation_list.txt``, ``testing_list.txt``) lets one loader serve both
the real data set and this one. Splits hold whole speakers: validation and test speakers come from
held-out engines (``val_engines``, ``test_engines``) and/or voices held out of the training engines.
``synth.json`` records the configuration and ``synth_clips.csv`` every clip's engine, speaker,
word boundaries and prosody; renditions an engine failed on are skipped and listed in the manifest.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from . import real_speech
from .common import CLIP_SAMPLES, EDGE_MARGIN, MAX_WORD_SAMPLES, SAMPLE_RATE, EngineError, SynthError, rng
from .engine import Engine
from .engines import ENGINES
from .espeak import (
    AMPLITUDE_RANGE,
    PITCH_RANGE,
    SPEED_RANGE,
    WORD_GAP_RANGE,
    EspeakEngine,
    check_no_homophones,
    espeak_version,  # fmt: skip
)
from .noise import BABBLE_VOCABULARY, NOISE_KINDS, babble, colored_noise
from .rooms import build_bank
from .voices import Speaker, check_split, select

NOISE_DIR = "_background_noise_"
MANIFEST = "synth.json"
CLIPS_CSV = "synth_clips.csv"
SPLITS = ("train", "validation", "testing")

DEFAULT_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# Other short words, several of them close to a keyword ("yet"/"yes", "note"/"no", "cup"/"up",
# "town"/"down", "light"/"right", "of"/"off", "top"/"stop", "goat"/"go"), so that "unknown" is hard.
# Close, never the same: a homophone ("know"/"no") would label one sound both ways, and a stream
# full of them could only be scored as false accepts (build_dataset refuses one).
DEFAULT_UNKNOWN_WORDS = (
    "yet", "note", "cup", "town", "light", "bright", "one", "of", "top", "goat", "dog", "bed",
    "bird", "cat", "happy", "house", "marvin", "sheila", "tree", "wow", "zero", "two", "four",
    "five", "nine", "learn", "follow", "forward",
)  # fmt: skip
GAIN_DB_RANGE = (-12.0, 4.0)  # level of each word after the engine's own (or normalised) level
NOISE_DBFS_RANGE = (-75.0, -55.0)  # RMS of the faint noise floor added to every clip
DEFAULT_VAL_ENGINES = ("rhvoice",)
DEFAULT_TEST_ENGINES = ("reserved",)
_WORD_RE = re.compile(r"^[a-z]+(?:['-][a-z]+)*$")


@dataclass
class SynthConfig:
    """What ``build_dataset`` writes; ``None`` fields take their defaults as documented per field."""

    out: Path
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    unknown_words: tuple[str, ...] | None = None  # default: DEFAULT_UNKNOWN_WORDS minus the keywords
    per_voice: int = 3  # renditions of each keyword per speaker
    unknown_per_voice: int = 1  # renditions of each unknown word per speaker
    renditions: dict[str, int] = field(
        default_factory=dict
    )  # engine -> per_voice for it (unknown scaled alike)
    seed: int = 0
    train_engines: tuple[str, ...] = ("espeak",)
    val_engines: tuple[str, ...] | None = None  # default rhvoice, or none when val_voices is given
    test_engines: tuple[str, ...] | None = None  # default reserved, or none when test_voices is given
    val_voices: int | None = (
        None  # training-engine speakers held out; default 10 % without val_engines, else 0
    )
    test_voices: int | None = None
    voices: tuple[str, ...] | None = None  # espeak-ng voices to use; default all English ones
    variants: tuple[str, ...] | None = None  # variants to combine them with; default all
    max_speakers: int | None = None  # per training engine: a random subset of its speakers
    noise_clips: int = 8
    noise_seconds: float = 30.0
    rirs: int = 0  # simulated room impulse responses stored with the data set (room_impulses.npz)
    real_speech: tuple[str, ...] = ()  # recorded speech packages for the training split's unknown words
    jobs: int | None = None  # worker processes; default os.cpu_count()
    overwrite: bool = False


@dataclass(frozen=True)
class _SpeakerTask:
    engine: str
    voice: str
    out: str
    keywords: tuple[str, ...]
    unknown_words: tuple[str, ...]
    per_voice: int
    unknown_per_voice: int
    seed: int


@dataclass(frozen=True)
class _NoiseTask:
    kind: str
    index: int
    out: str
    seconds: float
    seed: int
    speakers: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = ()


def place_in_clip(
    word: np.ndarray, rng: np.random.Generator, n: int = CLIP_SAMPLES, margin: int = EDGE_MARGIN
) -> tuple[np.ndarray, int]:
    """The word at a random offset inside an ``n``-sample clip of zeros; returns (clip, start)."""
    if word.size > n - 2 * margin:
        raise ValueError(f"word of {word.size} samples does not fit in {n} with {margin} margins")
    start = int(rng.integers(margin, n - margin - word.size + 1))
    clip = np.zeros(n, dtype=np.float32)
    clip[start : start + word.size] = word
    return clip, start


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _speaker_clips(task: _SpeakerTask) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Synthesise and write every clip of one speaker; all randomness comes from the speaker's seed.

    Returns the rows of the clips written and the renditions skipped (word, problem).
    """
    engine = ENGINES[task.engine]()
    speaker = Speaker(task.engine, task.voice)
    sid = speaker.id
    generator = rng(task.seed, 0, int(sid, 16))
    rows, skipped = [], []
    for rendition in range(max(task.per_voice, task.unknown_per_voice)):
        words = list(task.keywords) if rendition < task.per_voice else []
        words += list(task.unknown_words) if rendition < task.unknown_per_voice else []
        words = [words[i] for i in generator.permutation(len(words))]
        for first in range(0, len(words), engine.batch_words):
            batch = words[first : first + engine.batch_words]
            for word, spoken in zip(batch, engine.render(batch, task.voice, generator), strict=True):
                audio, problem = spoken.audio, spoken.problem
                if audio is not None and audio.size > MAX_WORD_SAMPLES:
                    audio, problem = None, f"{audio.size / SAMPLE_RATE:.2f} s does not fit a 1 s clip"
                if audio is None:
                    skipped.append(
                        {"speaker": speaker.key, "word": word, "rendition": rendition, "problem": problem}
                    )
                    continue
                if engine.peak is not None:
                    audio = audio * (engine.peak / max(float(np.max(np.abs(audio))), 1e-9))
                gain_db = float(generator.uniform(*GAIN_DB_RANGE))
                audio = audio * 10 ** (gain_db / 20)
                peak = float(np.max(np.abs(audio)))
                if peak > 0.99:  # never clip: lower the gain instead
                    audio *= 0.99 / peak
                    gain_db += 20 * np.log10(0.99 / peak)
                clip, start = place_in_clip(audio, generator)
                floor = 10 ** (generator.uniform(*NOISE_DBFS_RANGE) / 20)
                clip += (generator.standard_normal(CLIP_SAMPLES) * floor).astype(np.float32)
                name = f"{word}/{sid}_nohash_{rendition}.wav"
                sf.write(Path(task.out) / name, _to_int16(clip), SAMPLE_RATE, subtype="PCM_16")
                rows.append({
                    "file": name, "word": word, "speaker_id": sid, "speaker": speaker.key, "engine": task.engine,
                    "start": start, "end": start + audio.size, "gain_db": round(gain_db, 3),
                    "params": json.dumps(spoken.params, sort_keys=True),
                })  # fmt: skip
    return rows, skipped


def _noise_clip(task: _NoiseTask) -> dict[str, Any]:
    generator = rng(task.seed, 1, NOISE_KINDS.index(task.kind), task.index)
    n = round(task.seconds * SAMPLE_RATE)
    if task.kind == "babble":
        audio = babble(n, generator, task.speakers, task.vocabulary)
    else:
        audio = colored_noise(task.kind, n, generator)
    audio = audio * 0.1  # -20 dBFS RMS; the loader mixes it at its own level
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio *= 0.99 / peak
    name = f"{NOISE_DIR}/{task.kind}_noise_{task.index}.wav"
    sf.write(Path(task.out) / name, _to_int16(audio), SAMPLE_RATE, subtype="PCM_16")
    return {"file": name, "kind": task.kind, "seconds": n / SAMPLE_RATE}


def _run_tasks(fn: Any, tasks: list[Any], jobs: int) -> list[Any]:
    if jobs <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(fn, tasks, chunksize=max(1, len(tasks) // (8 * jobs))))


def _check_words(words: Sequence[str], what: str) -> None:
    for word in words:
        if not _WORD_RE.match(word):
            raise SynthError(f"{what} {word!r} is not a lowercase word (letters, ' and - only)")
    dupes = sorted({w for w in words if list(words).count(w) > 1})
    if dupes:
        raise SynthError(f"{what}s listed twice: {', '.join(dupes)}")


def _validate(config: SynthConfig) -> tuple[str, ...]:
    """Checks that need no speech engine; returns the unknown words to use."""
    if not config.keywords:
        raise SynthError("the keyword list is empty")
    _check_words(config.keywords, "keyword")
    if config.unknown_words is None:
        unknown = tuple(w for w in DEFAULT_UNKNOWN_WORDS if w not in config.keywords)
    else:
        unknown = tuple(config.unknown_words)
        _check_words(unknown, "unknown word")
        both = [w for w in unknown if w in config.keywords]
        if both:
            raise SynthError(f"word(s) both keyword and unknown: {', '.join(both)}")
    minimums = {"per_voice": 1, "unknown_per_voice": 0, "seed": 0, "noise_clips": 0, "noise_seconds": 1.0,
                "val_voices": 0, "test_voices": 0, "max_speakers": 1, "jobs": 1, "rirs": 0}  # fmt: skip
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise SynthError(f"--{name.replace('_', '-')} must be >= {minimum}")
    unknown_sources = [s for s in config.real_speech if s not in real_speech.SOURCES]
    if unknown_sources:
        raise SynthError(
            f"unknown --real-speech source(s) {', '.join(unknown_sources)}: use {', '.join(real_speech.SOURCES)}"
        )
    for source in config.real_speech:
        real_speech.clips(source)  # installed?
    bad = [f"{name}={n}" for name, n in config.renditions.items() if name not in ENGINES or n < 1]
    if bad:
        raise SynthError(f"--renditions {', '.join(bad)}: give ENGINE=N with a known engine and N >= 1")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not config.overwrite:
            raise SynthError(f"{out} is not empty (pass --overwrite to replace a previous build)")
        if not (out / MANIFEST).is_file():
            raise SynthError(f"refusing to overwrite {out}: it has no {MANIFEST}, so it is not a synth build")
    return unknown


def choose_speakers(config: SynthConfig) -> dict[str, list[Speaker]]:
    """The speakers of each split: training engines' speakers (minus held-out voices) and held-out engines.

    Held-out training-engine voices are a seeded random draw; with one engine and no cap this is
    the same draw as the espeak-only synth.py always made, so old builds are reproduced exactly.
    """
    engines: dict[str, Engine] = {"espeak": EspeakEngine(config.voices, config.variants)}
    val_items = config.val_engines if config.val_engines is not None else (
        DEFAULT_VAL_ENGINES if config.val_voices is None else ())  # fmt: skip
    test_items = config.test_engines if config.test_engines is not None else (
        DEFAULT_TEST_ENGINES if config.test_voices is None else ())  # fmt: skip
    pool = sorted(select(config.train_engines, "train", engines), key=lambda s: s.id)
    order = rng(config.seed, 2).permutation(len(pool))
    if config.max_speakers is not None:
        taken: dict[str, int] = {}
        kept = []
        for i in order:
            taken[pool[i].engine] = taken.get(pool[i].engine, 0) + 1
            if taken[pool[i].engine] <= config.max_speakers:
                kept.append(i)
        order = np.array(kept, dtype=np.int64)
    chosen = [pool[i] for i in order]
    n_val = (
        config.val_voices if config.val_voices is not None else (0 if val_items else round(0.1 * len(chosen)))
    )
    n_test = (
        config.test_voices
        if config.test_voices is not None
        else (0 if test_items else round(0.1 * len(chosen)))
    )
    if n_val + n_test >= len(chosen):
        raise SynthError(
            f"{n_val} validation + {n_test} test speakers leave none of the {len(chosen)} for training"
        )
    split = {
        "train": chosen[n_val + n_test :],
        "validation": chosen[:n_val] + select(val_items, "validation", engines),
        "testing": chosen[n_val : n_val + n_test] + select(test_items, "testing", engines),
    }
    seen: dict[str, str] = {}
    for name, speakers in split.items():
        check_split(name, speakers)
        for s in speakers:
            if seen.setdefault(s.key, name) != name:
                raise SynthError(
                    f"speaker {s.key} is in both {seen[s.key]} and {name}: splits must not share voices"
                )
    return {name: sorted(speakers, key=lambda s: s.id) for name, speakers in split.items()}


def _renditions(config: SynthConfig, engine: str) -> tuple[int, int]:
    """(keyword, unknown-word) renditions per speaker of ``engine``."""
    per_voice = config.renditions.get(engine, config.per_voice)
    return per_voice, math.ceil(config.unknown_per_voice * per_voice / config.per_voice)


def build_dataset(config: SynthConfig) -> dict[str, Any]:
    """Write the data set to ``config.out`` and return its manifest (also saved as ``synth.json``).

    The same configuration always gives byte-identical files, whatever ``jobs`` is: every speaker
    and noise clip draws from its own generator, seeded by ``seed`` and the speaker's id. The build
    goes to a temporary sibling folder that replaces ``out`` only once complete.
    """
    unknown = _validate(config)
    check_no_homophones(config.keywords, unknown)
    split = choose_speakers(config)
    every = sorted((s for names in split.values() for s in names), key=lambda s: s.id)
    if len({s.id for s in every}) != len(every):
        raise EngineError("two speakers share a speaker id; change speaker_id's hash length")
    jobs = config.jobs or os.cpu_count() or 1
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for word in (*config.keywords, *unknown):
            (tmp / word).mkdir(parents=True)
        (tmp / NOISE_DIR).mkdir()
        speaker_tasks = [
            _SpeakerTask(s.engine, s.voice, str(tmp), config.keywords, unknown, *_renditions(config, s.engine),
                         config.seed)
            for s in every
        ]  # fmt: skip
        babble_speakers = tuple(sorted(s.voice for s in split["train"] if s.engine == "espeak")) or (
            "en-us",
            "en-gb",
        )
        vocabulary = tuple(w for w in BABBLE_VOCABULARY if w.lower() not in config.keywords)
        noise_tasks = [
            _NoiseTask(NOISE_KINDS[i % len(NOISE_KINDS)], i // len(NOISE_KINDS), str(tmp), config.noise_seconds,
                       config.seed, babble_speakers, vocabulary)
            for i in range(config.noise_clips)
        ]  # fmt: skip
        results = _run_tasks(_speaker_clips, speaker_tasks, jobs)
        rows = [row for rows, _ in results for row in rows]
        real = [row for source in config.real_speech for row in real_speech.write(tmp, source)]
        rows += real
        skipped = [item for _, items in results for item in items]
        noise = _run_tasks(_noise_clip, noise_tasks, jobs)
        rooms = build_bank(tmp, config.rirs, config.seed) if config.rirs else None

        split_of = {s.id: name for name, speakers in split.items() for s in speakers}
        split_of.update({row["speaker_id"]: "train" for row in real})
        rows.sort(key=lambda r: r["file"])
        for list_name, split_name in (("validation_list.txt", "validation"), ("testing_list.txt", "testing")):
            lines = [r["file"] for r in rows if split_of[r["speaker_id"]] == split_name]
            (tmp / list_name).write_text("".join(f"{line}\n" for line in lines))
        with open(tmp / CLIPS_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file", "split", *(k for k in rows[0] if k != "file")])
            writer.writeheader()
            for row in rows:
                writer.writerow({"split": split_of[row["speaker_id"]], **row})

        counts: dict[str, dict[str, int]] = {name: {} for name in split}
        for row in rows:
            per_word = counts[split_of[row["speaker_id"]]]
            per_word[row["word"]] = per_word.get(row["word"], 0) + 1
        used = sorted({s.engine for s in every})
        manifest = {
            "format": "speech_commands_v2",
            "generator": "ssamba_training.synth",
            "espeak_ng_version": espeak_version(),
            "engines": {name: ENGINES[name]().version() for name in used},
            "sample_rate": SAMPLE_RATE,
            "clip_samples": CLIP_SAMPLES,
            "seed": config.seed,
            "keywords": list(config.keywords),
            "unknown_words": list(unknown),
            "per_voice": config.per_voice,
            "unknown_per_voice": config.unknown_per_voice,
            "renditions": {name: _renditions(config, name)[0] for name in used},
            "speech_params": {
                "espeak_pitch": PITCH_RANGE,
                "espeak_speed_wpm": SPEED_RANGE,
                "espeak_amplitude": AMPLITUDE_RANGE,
                "espeak_word_gap_10ms": WORD_GAP_RANGE,
                "gain_db": GAIN_DB_RANGE,
                "noise_floor_dbfs": NOISE_DBFS_RANGE,
            },  # fmt: skip
            "speakers": {
                name: [{"id": s.id, "speaker": s.key, "engine": s.engine} for s in speakers]
                for name, speakers in split.items()
            },
            "counts": {
                name: {
                    "clips": sum(c.values()),
                    "speakers": len(split[name]),
                    "per_word": dict(sorted(c.items())),
                }
                for name, c in counts.items()
            },
            "skipped": skipped,
            "background_noise": noise,
            "room_impulses": rooms,
            "real_speech": {
                source: sum(r["engine"] == source for r in real) for source in config.real_speech
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.is_dir() and config.overwrite:
            shutil.rmtree(out)
        elif out.is_dir():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
