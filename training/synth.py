"""Synthetic keyword data set in the Google Speech Commands v2 layout, spoken by espeak-ng.

Keyword spotting needs thousands of clips per word from many speakers. espeak-ng has a handful of
English accents and about a hundred voice variants; every accent+variant pair is one "speaker",
and each speaker says each word several times with random pitch, speed and amplitude. Writing the
result exactly as Speech Commands v2 is laid out (``word/<speaker>_nohash_<n>.wav``,
``_background_noise_/``, ``validation_list.txt``, ``testing_list.txt``) lets one loader serve both
the real data set and this one. Held-out lists contain whole speakers never used for training.

Usage::

    python training/synth.py --out data/synth_sc --jobs 2

Besides the Speech Commands files, ``synth.json`` records the configuration and
``synth_clips.csv`` the word boundaries and speech parameters of every clip.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # Speech Commands clips are 1 s
NOISE_DIR = "_background_noise_"
MANIFEST = "synth.json"
CLIPS_CSV = "synth_clips.csv"
NOISE_KINDS = ("white", "pink", "brown", "babble")

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
# Words the babble noise is made of; keywords are removed at run time so that noise never says one.
BABBLE_VOCABULARY = (
    "the", "a", "and", "then", "we", "they", "you", "I", "it", "was", "is", "will", "have", "had",
    "said", "think", "maybe", "really", "people", "time", "year", "day", "work", "place", "small",
    "large", "little", "never", "always", "before", "after", "because", "about", "could", "would",
    "should", "water", "coffee", "morning", "evening", "table", "window", "garden", "market",
    "minute", "street", "friend", "family", "question", "answer", "number", "paper", "kitchen",
    "there", "here", "with", "from", "into", "over", "under", "again", "very", "quite", "much",
    "many", "some", "every", "other", "another", "talk", "walk", "bring", "take", "make", "look",
    "find", "give", "tell", "ask", "seem", "feel", "leave", "call", "keep", "remember", "weather",
    "tomorrow", "yesterday", "probably", "certainly", "perhaps", "story", "music", "dinner",
)  # fmt: skip

# Random speech parameters (espeak-ng -p, -s, -a, -g) and post-synthesis level, drawn per rendition.
PITCH_RANGE = (0, 99)
SPEED_RANGE = (120, 220)  # words per minute
AMPLITUDE_RANGE = (60, 110)  # espeak-ng default 100; a few variants clip above it
WORD_GAP_RANGE = (0, 10)  # units of 10 ms, between words of a phrase
GAIN_DB_RANGE = (-12.0, 4.0)
NOISE_DBFS_RANGE = (-75.0, -55.0)  # RMS of the faint noise floor added to every clip
MAX_SPEED = 450  # espeak-ng's fastest rate without sonic speed-up

EDGE_MARGIN = SAMPLE_RATE // 100  # words end at least 10 ms inside the clip
QUIET_LEVEL = 2  # int16 steps; espeak-ng writes exact digital silence between utterances
# Some variants (echo, "announcer") add reverberant tails; whatever is this far below the loudest
# sample counts as silence, so a tail neither joins two words nor lengthens one.
QUIET_DB = -50.0
WORD_BREAK_MS = 1000  # SSML pause between words synthesised in one call
SPLIT_GAP_S = 0.3  # silences this long separate words (stop closures last < 0.1 s)
WORD_PAD_S = 0.005  # kept around the audible part of a word so that resampling keeps its edges
BATCH_WORDS = 8  # words per espeak-ng call; each call has its own random parameters
PROBE_TEXT = "Park the car by the water, then dance on the bath mat."
HOMOPHONE_VOICE = "en-us"  # accent whose phoneme spelling decides whether two words are homophones
NOT_INSTALLED = "espeak-ng is not installed: apt-get install espeak-ng"
_WORD_RE = re.compile(r"^[a-z]+(?:['-][a-z]+)*$")


class SynthError(Exception):
    """A configuration problem the user can fix: reported in one line, exit status 2."""


class EspeakError(RuntimeError):
    """espeak-ng failed on input it should handle: reported in one line, exit status 1."""


@dataclass(frozen=True)
class SpeechParams:
    """espeak-ng prosody for one call: pitch (-p), speed in wpm (-s), amplitude (-a), word gap (-g)."""

    pitch: int = 50
    speed: int = 175
    amplitude: int = 100
    word_gap: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> SpeechParams:
        """Random parameters within the module's ranges."""
        return cls(
            pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
            amplitude=int(rng.integers(AMPLITUDE_RANGE[0], AMPLITUDE_RANGE[1] + 1)),
            word_gap=int(rng.integers(WORD_GAP_RANGE[0], WORD_GAP_RANGE[1] + 1)),
        )


# --------------------------------------------------------------------------------------- espeak-ng


def espeak_path() -> str:
    """The espeak-ng executable; raises SynthError with the install hint when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise SynthError(NOT_INSTALLED)
    return path


def espeak_version() -> str:
    """espeak-ng's version number, e.g. ``1.51`` (recorded in the manifest: output depends on it)."""
    text = _espeak_text(["--version"])
    match = re.search(r"text-to-speech:\s*(\S+)", text)
    return match.group(1) if match else text.strip()


def _espeak_text(args: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run([espeak_path(), *args], capture_output=True, text=True, input=stdin)
    if proc.returncode != 0:
        raise EspeakError(f"espeak-ng {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def phonemes(words: Sequence[str], voice: str = HOMOPHONE_VOICE) -> list[str]:
    """espeak-ng's phoneme spelling of each word (``-x``), one call for all of them."""
    lines = _espeak_text(["-q", "-x", "-v", voice], stdin="".join(f"{word}\n" for word in words)).splitlines()
    spelled = [line.strip() for line in lines if line.strip()]
    if len(spelled) != len(words):
        raise EspeakError(f"espeak-ng -x gave {len(spelled)} phoneme lines for {len(words)} words")
    return spelled


def check_no_homophones(keywords: Sequence[str], unknown: Sequence[str], voice: str = HOMOPHONE_VOICE) -> None:
    """Refuse unknown words that espeak-ng says exactly as a keyword: their clips would teach nothing."""
    spelled = phonemes([*keywords, *unknown], voice)
    keyword_of = dict(zip(spelled[: len(keywords)], keywords, strict=True))
    clashes = [
        f"{word!r} sounds as {keyword_of[sound]!r} ({sound})"
        for word, sound in zip(unknown, spelled[len(keywords) :], strict=True)
        if sound in keyword_of
    ]
    if clashes:
        raise SynthError(f"unknown word(s) {'; '.join(clashes)}: remove them from --unknown-words")


def _espeak_raw(text: str, speaker: str, params: SpeechParams, ssml: bool = False) -> tuple[np.ndarray, int]:
    """int16 samples and sample rate of espeak-ng's own output (22.05 kHz), read from stdout."""
    cmd = [espeak_path(), "-v", speaker, "-p", str(params.pitch), "-s", str(params.speed)]
    cmd += ["-a", str(params.amplitude), "-g", str(params.word_gap), "--stdout"]
    if ssml:
        cmd.append("-m")
    proc = subprocess.run([*cmd, text], capture_output=True)
    wav = proc.stdout
    # With --stdout the RIFF sizes are placeholders; the format is fixed: 44-byte header, mono int16.
    if proc.returncode != 0 or proc.stderr or len(wav) < 44 or wav[:4] != b"RIFF" or wav[36:40] != b"data":
        raise EspeakError(f"espeak-ng -v {speaker} failed: {proc.stderr.decode(errors='replace').strip()}")
    rate = int.from_bytes(wav[24:28], "little")
    return np.frombuffer(wav, dtype="<i2", offset=44, count=(len(wav) - 44) // 2), rate


def _resample(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    audio = samples.astype(np.float32) / 32768.0
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def synthesize(
    text: str, speaker: str, params: SpeechParams = SpeechParams(), sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text`` (sentences allowed) as ``speaker`` (``voice`` or ``voice+variant``); float32 mono."""
    samples, rate = _espeak_raw(text, speaker, params)
    return _resample(samples, rate, sample_rate)


def _audible_spans(samples: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """[start, end) of the audible stretches separated by at least ``min_gap`` quiet samples."""
    level = np.abs(samples.astype(np.int32))
    if level.size == 0 or level.max() <= QUIET_LEVEL:
        return []
    loud = np.flatnonzero(level > max(QUIET_LEVEL, level.max() * 10 ** (QUIET_DB / 20)))
    breaks = np.flatnonzero(np.diff(loud) > min_gap)
    starts = np.concatenate([loud[:1], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks], loud[-1:]]) + 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _cut(samples: np.ndarray, rate: int, span: tuple[int, int], sample_rate: int) -> np.ndarray:
    pad = round(WORD_PAD_S * rate)
    return _resample(samples[max(span[0] - pad, 0) : span[1] + pad], rate, sample_rate)


def synthesize_word(
    text: str,
    speaker: str,
    params: SpeechParams = SpeechParams(),
    sample_rate: int = SAMPLE_RATE,
    max_samples: int | None = None,
) -> np.ndarray:
    """One word (or short phrase) with the silence around it trimmed; float32 mono at ``sample_rate``.

    When ``max_samples`` is given and the word is longer, it is spoken again faster (never cut), up
    to espeak-ng's top speed; raises SynthError if it still does not fit.
    """
    while True:
        samples, rate = _espeak_raw(text, speaker, params)
        spans = _audible_spans(samples, min_gap=len(samples))
        if not spans:
            raise EspeakError(f"espeak-ng -v {speaker} produced silence for {text!r}")
        audio = _cut(samples, rate, spans[0], sample_rate)
        if max_samples is None or len(audio) <= max_samples:
            return audio
        if params.speed >= MAX_SPEED:
            raise SynthError(f"{text!r} does not fit in {max_samples} samples even at {MAX_SPEED} wpm")
        faster = int(np.ceil(params.speed * len(audio) / max_samples * 1.1))
        params = SpeechParams(params.pitch, min(faster, MAX_SPEED), params.amplitude, params.word_gap)


def synthesize_words(
    words: Sequence[str],
    speaker: str,
    params: SpeechParams = SpeechParams(),
    sample_rate: int = SAMPLE_RATE,
    max_samples: int | None = None,
) -> list[np.ndarray]:
    """Several isolated words in one espeak-ng call (a process start costs more than a word).

    The words are spoken as separate sentences with long pauses and split at the pauses; if the
    split does not give one stretch per word, each word is synthesised on its own instead.
    """
    body = "".join(f'<s>{escape(w)}</s><break time="{WORD_BREAK_MS}ms"/>' for w in words)
    samples, rate = _espeak_raw(f"<speak>{body}</speak>", speaker, params, ssml=True)
    spans = _audible_spans(samples, min_gap=round(SPLIT_GAP_S * rate))
    if len(spans) != len(words):
        return [synthesize_word(w, speaker, params, sample_rate, max_samples) for w in words]
    out = []
    for word, span in zip(words, spans, strict=True):
        audio = _cut(samples, rate, span, sample_rate)
        if max_samples is not None and len(audio) > max_samples:
            audio = synthesize_word(word, speaker, params, sample_rate, max_samples)
        out.append(audio)
    return out


def _voice_table(option: str) -> list[str]:
    return _espeak_text([f"--voices={option}"]).splitlines()[1:]


def _all_english_voices() -> list[str]:
    names = []
    for line in _voice_table("en"):
        fields = line.split()
        if len(fields) < 5 or fields[4].startswith("!v/"):
            continue  # a variant listed among the languages
        # mbrola voices share language codes ("en-us"); their file name ("mb-us1") names them.
        names.append(fields[4].split("/")[-1] if fields[4].startswith("mb/") else fields[1])
    return sorted(set(names))


def _all_variants() -> list[str]:
    names = []
    for line in _voice_table("variant"):
        if "!v/" in line:
            name = line.split("!v/", 1)[1]
            names.append(re.sub(r"\s+\(.*\)\s*$", "", name).strip())
    return sorted(set(names))


def _fingerprint(speaker: str, text: str) -> str | None:
    try:
        samples, _ = _espeak_raw(text, speaker, SpeechParams())
    except EspeakError:
        return None
    if not np.any(np.abs(samples.astype(np.int32)) > QUIET_LEVEL):
        return None
    return hashlib.sha1(samples.tobytes()).hexdigest()


def _working(candidates: Iterable[str], text: str, reference: str | None = None) -> list[str]:
    """Candidates whose speech is real and distinct: espeak-ng silently falls back for unknown names."""
    seen = set() if reference is None else {_fingerprint(reference, text)}
    names = []
    for name in candidates:
        speaker = name if reference is None else f"{reference}+{name}"
        fp = _fingerprint(speaker, text)
        if fp is not None and fp not in seen:
            seen.add(fp)
            names.append(name)
    return names


def list_english_voices() -> list[str]:
    """English espeak-ng voices that work here (mbrola voices need mbrola), duplicates removed."""
    return _working(_all_english_voices(), PROBE_TEXT)


def list_variants() -> list[str]:
    """espeak-ng voice variants (``m3``, ``f2``, ``klatt2``...) that change the sound of a voice."""
    return _working(_all_variants(), "hello there", reference="en-us")


def list_speakers(voices: Sequence[str] | None = None, variants: Sequence[str] | None = None) -> list[str]:
    """Every ``voice`` and ``voice+variant`` pair, sorted; defaults to all that work.

    Requested names are checked the same way as discovered ones; raises SynthError for names that
    do not exist or sound the same as another.
    """
    if voices is None:
        voices = list_english_voices()
    else:
        _check_known(voices, _all_english_voices(), "voice")
        _check_distinct(voices, _working(voices, PROBE_TEXT), "voice")
    if variants is None:
        variants = list_variants()
    else:
        _check_known(variants, _all_variants(), "variant")
        _check_distinct(variants, _working(variants, "hello there", reference="en-us"), "variant")
    return sorted([*voices] + [f"{v}+{x}" for v in voices for x in variants])


def _check_known(names: Sequence[str], known: list[str], what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SynthError(f"unknown espeak-ng {what}(s): {', '.join(unknown)} (available: {', '.join(known)})")


def _check_distinct(names: Sequence[str], working: list[str], what: str) -> None:
    bad = [n for n in names if n not in working]
    if bad:
        raise SynthError(f"espeak-ng {what}(s) {', '.join(bad)} do not work here or duplicate another")


def speaker_id(speaker: str) -> str:
    """Stable 8-hex-digit id of a speaker, as in Speech Commands file names."""
    return hashlib.sha1(speaker.encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------------ noise


def colored_noise(
    kind: str, n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, f_min: float = 20.0
) -> np.ndarray:
    """Zero-mean, unit-RMS float32 noise with power spectrum 1/f^0 (white), 1/f (pink) or 1/f^2 (brown).

    Shaped in the frequency domain; bins below ``f_min`` are removed (as a microphone's high-pass
    would) so that brown noise does not drift like a DC offset over a 1 s crop.
    """
    exponents = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if kind not in exponents:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {sorted(exponents)}")
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    gain = np.zeros_like(freqs)
    keep = freqs >= max(f_min, freqs[1] if freqs.size > 1 else 0.0)
    gain[keep] = freqs[keep] ** (-exponents[kind] / 2.0)
    return _unit_rms(np.fft.irfft(spectrum * gain, n))


def _unit_rms(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    rms = float(np.sqrt(np.mean(np.square(x))))
    return (x / rms if rms > 0 else x).astype(np.float32)


def _sentences(rng: np.random.Generator, vocabulary: Sequence[str], n_words: int) -> str:
    words = [vocabulary[i] for i in rng.integers(len(vocabulary), size=n_words)]
    out, start = [], 0
    while start < len(words):
        stop = start + int(rng.integers(3, 10))
        sentence = " ".join(words[start:stop])
        out.append(sentence[:1].upper() + sentence[1:] + str(rng.choice([".", ",", "?", "."])))
        start = stop
    return " ".join(out)


def babble(
    n: int,
    rng: np.random.Generator,
    speakers: Sequence[str],
    vocabulary: Sequence[str] = BABBLE_VOCABULARY,
    streams: int = 6,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Unit-RMS float32 babble: ``streams`` overlapping talkers, each a chain of random speakers."""
    mix = np.zeros(n, dtype=np.float64)
    for _ in range(streams):
        parts, total = [], 0
        while total < n:
            seconds = min((n - total) / sample_rate, 10.0)
            text = _sentences(rng, vocabulary, max(3, round(seconds * 2.5)))
            speaker = speakers[int(rng.integers(len(speakers)))]
            part = _unit_rms(synthesize(text, speaker, SpeechParams.sample(rng), sample_rate))
            parts.append(part)
            total += part.size
        stream = np.concatenate(parts)
        start = int(rng.integers(stream.size - n + 1))
        mix += stream[start : start + n] * 10 ** (rng.uniform(-6.0, 0.0) / 20)
    return _unit_rms(mix)


# ---------------------------------------------------------------------------------------- data set


@dataclass
class SynthConfig:
    """What ``build_dataset`` writes; ``None`` fields take their defaults from the discovered speakers."""

    out: Path
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    unknown_words: tuple[str, ...] | None = None  # default: DEFAULT_UNKNOWN_WORDS minus the keywords
    per_voice: int = 3  # renditions of each keyword per speaker
    unknown_per_voice: int = 1  # renditions of each unknown word per speaker
    seed: int = 0
    val_voices: int | None = None  # held-out speakers; default 10 % of them
    test_voices: int | None = None
    voices: tuple[str, ...] | None = None  # espeak-ng voices to use; default all English ones
    variants: tuple[str, ...] | None = None  # variants to combine them with; default all
    max_speakers: int | None = None  # a random subset of the voice x variant speakers
    noise_clips: int = 8
    noise_seconds: float = 30.0
    jobs: int | None = None  # worker processes; default os.cpu_count()
    overwrite: bool = False


@dataclass(frozen=True)
class _SpeakerTask:
    speaker: str
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


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


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


def _speaker_clips(task: _SpeakerTask) -> list[dict[str, Any]]:
    """Synthesise and write every clip of one speaker; all randomness comes from the speaker's seed."""
    sid = speaker_id(task.speaker)
    rng = _rng(task.seed, 0, int(sid, 16))
    max_word = CLIP_SAMPLES - 2 * EDGE_MARGIN
    rows = []
    for rendition in range(max(task.per_voice, task.unknown_per_voice)):
        words = list(task.keywords) if rendition < task.per_voice else []
        words += list(task.unknown_words) if rendition < task.unknown_per_voice else []
        words = [words[i] for i in rng.permutation(len(words))]
        for first in range(0, len(words), BATCH_WORDS):
            batch = words[first : first + BATCH_WORDS]
            params = SpeechParams.sample(rng)
            for word, audio in zip(
                batch, synthesize_words(batch, task.speaker, params, max_samples=max_word), strict=True
            ):
                gain_db = float(rng.uniform(*GAIN_DB_RANGE))
                audio = audio * 10 ** (gain_db / 20)
                peak = float(np.max(np.abs(audio)))
                if peak > 0.99:  # never clip: lower the gain instead
                    audio *= 0.99 / peak
                    gain_db += 20 * np.log10(0.99 / peak)
                clip, start = place_in_clip(audio, rng)
                floor = 10 ** (rng.uniform(*NOISE_DBFS_RANGE) / 20)
                clip += (rng.standard_normal(CLIP_SAMPLES) * floor).astype(np.float32)
                name = f"{word}/{sid}_nohash_{rendition}.wav"
                sf.write(Path(task.out) / name, _to_int16(clip), SAMPLE_RATE, subtype="PCM_16")
                rows.append({
                    "file": name, "word": word, "speaker_id": sid, "speaker": task.speaker,
                    "start": start, "end": start + audio.size, "pitch": params.pitch,
                    "speed": params.speed, "amplitude": params.amplitude, "word_gap": params.word_gap,
                    "gain_db": round(gain_db, 3),
                })  # fmt: skip
    return rows


def _noise_clip(task: _NoiseTask) -> dict[str, Any]:
    rng = _rng(task.seed, 1, NOISE_KINDS.index(task.kind), task.index)
    n = round(task.seconds * SAMPLE_RATE)
    if task.kind == "babble":
        audio = babble(n, rng, task.speakers, task.vocabulary)
    else:
        audio = colored_noise(task.kind, n, rng)
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
    """Checks that need no espeak-ng; returns the unknown words to use."""
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
                "val_voices": 0, "test_voices": 0, "max_speakers": 1, "jobs": 1}  # fmt: skip
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise SynthError(f"--{name.replace('_', '-')} must be >= {minimum}")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not config.overwrite:
            raise SynthError(f"{out} is not empty (pass --overwrite to replace a previous build)")
        if not (out / MANIFEST).is_file():
            raise SynthError(f"refusing to overwrite {out}: it has no {MANIFEST}, so it is not a synth build")
    return unknown


def _split_speakers(config: SynthConfig, speakers: list[str]) -> dict[str, list[str]]:
    speakers = sorted(speakers, key=speaker_id)
    order = _rng(config.seed, 2).permutation(len(speakers))
    if config.max_speakers is not None:
        order = order[: config.max_speakers]
    chosen = [speakers[i] for i in order]
    n_val = round(0.1 * len(chosen)) if config.val_voices is None else config.val_voices
    n_test = round(0.1 * len(chosen)) if config.test_voices is None else config.test_voices
    if n_val + n_test >= len(chosen):
        raise SynthError(
            f"{n_val} validation + {n_test} test speakers leave none of the {len(chosen)} for training"
        )
    return {
        "train": sorted(chosen[n_val + n_test :]),
        "validation": sorted(chosen[:n_val]),
        "testing": sorted(chosen[n_val : n_val + n_test]),
    }


def build_dataset(config: SynthConfig) -> dict[str, Any]:
    """Write the data set to ``config.out`` and return its manifest (also saved as ``synth.json``).

    The same configuration always gives byte-identical files, whatever ``jobs`` is: every speaker
    and noise clip draws from its own generator, seeded by ``seed`` and the speaker's id. The build
    goes to a temporary sibling folder that replaces ``out`` only once complete.
    """
    unknown = _validate(config)
    check_no_homophones(config.keywords, unknown)
    speakers = list_speakers(config.voices, config.variants)
    ids = [speaker_id(s) for s in speakers]
    if len(set(ids)) != len(ids):
        raise EspeakError("two speakers share a speaker id; change speaker_id's hash length")
    split = _split_speakers(config, speakers)
    jobs = config.jobs or os.cpu_count() or 1
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for word in (*config.keywords, *unknown):
            (tmp / word).mkdir(parents=True)
        (tmp / NOISE_DIR).mkdir()
        every = sorted(s for names in split.values() for s in names)
        speaker_tasks = [
            _SpeakerTask(
                s, str(tmp), config.keywords, unknown, config.per_voice, config.unknown_per_voice, config.seed
            )
            for s in every
        ]
        vocabulary = tuple(w for w in BABBLE_VOCABULARY if w.lower() not in config.keywords)
        noise_tasks = [
            _NoiseTask(NOISE_KINDS[i % len(NOISE_KINDS)], i // len(NOISE_KINDS), str(tmp), config.noise_seconds,
                       config.seed, tuple(split["train"]), vocabulary)
            for i in range(config.noise_clips)
        ]  # fmt: skip
        rows = [row for rows in _run_tasks(_speaker_clips, speaker_tasks, jobs) for row in rows]
        noise = _run_tasks(_noise_clip, noise_tasks, jobs)

        split_of = {speaker_id(s): name for name, names in split.items() for s in names}
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
        manifest = {
            "format": "speech_commands_v2",
            "generator": "ssamba_training.synth",
            "espeak_ng_version": espeak_version(),
            "sample_rate": SAMPLE_RATE,
            "clip_samples": CLIP_SAMPLES,
            "seed": config.seed,
            "keywords": list(config.keywords),
            "unknown_words": list(unknown),
            "per_voice": config.per_voice,
            "unknown_per_voice": config.unknown_per_voice,
            "speech_params": {
                "pitch": PITCH_RANGE,
                "speed_wpm": SPEED_RANGE,
                "amplitude": AMPLITUDE_RANGE,
                "word_gap_10ms": WORD_GAP_RANGE,
                "gain_db": GAIN_DB_RANGE,
                "noise_floor_dbfs": NOISE_DBFS_RANGE,
            },  # fmt: skip
            "speakers": {
                name: [{"id": speaker_id(s), "speaker": s} for s in sorted(names, key=speaker_id)]
                for name, names in split.items()
            },
            "counts": {
                name: {
                    "clips": sum(c.values()),
                    "speakers": len(split[name]),
                    "per_word": dict(sorted(c.items())),
                }
                for name, c in counts.items()
            },
            "background_noise": noise,
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


# --------------------------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as a SynthError (one line) instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SynthError(message)


def _word_list(text: str) -> tuple[str, ...]:
    return tuple(w.strip().lower() for w in text.split(",") if w.strip())


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="synth.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    p.add_argument("--keywords", type=_word_list, default=DEFAULT_KEYWORDS, help="comma-separated")
    p.add_argument(
        "--unknown-words", type=_word_list, default=None, help="comma-separated; default: a built-in list"
    )
    p.add_argument("--per-voice", type=int, default=3, help="renditions of each keyword per speaker")
    p.add_argument(
        "--unknown-per-voice", type=int, default=1, help="renditions of each unknown word per speaker"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-voices", type=int, default=None, help="held-out validation speakers (default 10%%)")
    p.add_argument("--test-voices", type=int, default=None, help="held-out test speakers (default 10%%)")
    p.add_argument("--voices", type=_word_list, default=None, help="espeak-ng voices, e.g. en-us,en-gb")
    p.add_argument("--variants", type=lambda s: tuple(v for v in s.split(",") if v), default=None,
                   help="espeak-ng variants, e.g. m3,f2,klatt")  # fmt: skip
    p.add_argument("--max-speakers", type=int, default=None, help="use a random subset of the speakers")
    p.add_argument("--noise-clips", type=int, default=8, help="files in _background_noise_")
    p.add_argument("--noise-seconds", type=float, default=30.0, help="length of each noise file")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2: bad arguments or no espeak-ng)."""
    try:
        args = _parser().parse_args(argv)
        config = SynthConfig(**{k: v for k, v in vars(args).items()})
        started = time.perf_counter()
        manifest = build_dataset(config)
    except SynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EspeakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    parts = ", ".join(f"{name} {c['clips']} from {c['speakers']} speakers" for name, c in counts.items())
    print(
        f"wrote {sum(c['clips'] for c in counts.values())} clips ({parts}) and "
        f"{len(manifest['background_noise'])} noise files to {config.out} in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    # Run as a file, this module is __main__; worker processes must find the importable module.
    from ssamba_training.synth import main as _main

    sys.exit(_main())
