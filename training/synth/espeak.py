"""espeak-ng: its command line, voice and variant discovery, and two engines on it.

``espeak`` is the formant synthesizer with its English accents x voice variants (every pair is one
"speaker"); ``mbrola`` is espeak-ng's front end driving MBROLA diphone voices recorded from human
speakers (4 native English, 16 accented). The MBROLA list is explicit: installing mbrola must not
change what ``espeak`` means.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .common import (
    MAX_WORD_SAMPLES,
    QUIET_LEVEL,
    SAMPLE_RATE,
    EngineError,
    SynthError,
    audible_spans,
    cut,
    resample,
)
from .engine import Engine, Rendition, each_word

# Random speech parameters (espeak-ng -p, -s, -a, -g), drawn per call.
PITCH_RANGE = (0, 99)
SPEED_RANGE = (120, 220)  # words per minute
AMPLITUDE_RANGE = (60, 110)  # espeak-ng default 100; a few variants clip above it
WORD_GAP_RANGE = (0, 10)  # units of 10 ms, between words of a phrase
MAX_SPEED = 450  # espeak-ng's fastest rate without sonic speed-up
WORD_BREAK_MS = 1000  # SSML pause between words synthesised in one call
SPLIT_GAP_S = 0.3  # silences this long separate words (stop closures last < 0.1 s)
BATCH_WORDS = 8  # words per espeak-ng call; each call has its own random parameters
PROBE_TEXT = "Park the car by the water, then dance on the bath mat."
HOMOPHONE_VOICE = "en-us"  # accent whose phoneme spelling decides whether two words are homophones
NOT_INSTALLED = "espeak-ng is not installed: apt-get install espeak-ng"
MBROLA_VOICES = (
    "mb-us1", "mb-us2", "mb-us3", "mb-en1",  # native English
    "mb-de1-en", "mb-de2-en", "mb-de3-en", "mb-de4-en", "mb-de5-en", "mb-de6-en", "mb-gr2-en", "mb-ro1-en",
    "mb-nl2-en", "mb-fr1-en", "mb-fr4-en", "mb-hu1-en", "mb-sw1-en", "mb-sw2-en", "mb-af1-en", "mb-pl1-en",
)  # fmt: skip
MBROLA_DATA = Path("/usr/share/mbrola")


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
        raise EngineError(f"espeak-ng {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def phonemes(words: Sequence[str], voice: str = HOMOPHONE_VOICE, ipa: bool = False) -> list[str]:
    """espeak-ng's phoneme spelling of each word (``-x``, or IPA), one call for all of them."""
    option = "--ipa" if ipa else "-x"
    lines = _espeak_text(
        ["-q", option, "-v", voice], stdin="".join(f"{word}\n" for word in words)
    ).splitlines()
    spelled = [line.strip() for line in lines if line.strip()]
    if len(spelled) != len(words):
        raise EngineError(f"espeak-ng {option} gave {len(spelled)} phoneme lines for {len(words)} words")
    return spelled


def check_no_homophones(
    keywords: Sequence[str], unknown: Sequence[str], voice: str = HOMOPHONE_VOICE
) -> None:
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
        raise EngineError(f"espeak-ng -v {speaker} failed: {proc.stderr.decode(errors='replace').strip()}")
    rate = int.from_bytes(wav[24:28], "little")
    return np.frombuffer(wav, dtype="<i2", offset=44, count=(len(wav) - 44) // 2), rate


def synthesize(
    text: str, speaker: str, params: SpeechParams = SpeechParams(), sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text`` (sentences allowed) as ``speaker`` (``voice`` or ``voice+variant``); float32 mono."""
    samples, rate = _espeak_raw(text, speaker, params)
    return resample(samples, rate, sample_rate)


def synthesize_word(
    text: str,
    speaker: str,
    params: SpeechParams = SpeechParams(),
    sample_rate: int = SAMPLE_RATE,
    max_samples: int | None = None,
) -> np.ndarray:
    """One word (or short phrase) with the silence around it trimmed; float32 mono at ``sample_rate``.

    When ``max_samples`` is given and the word is longer, it is spoken again faster (never cut), up
    to espeak-ng's top speed; raises EngineError if it is silent or still does not fit.
    """
    while True:
        samples, rate = _espeak_raw(text, speaker, params)
        spans = audible_spans(samples, min_gap=len(samples))
        if not spans:
            raise EngineError(f"espeak-ng -v {speaker} produced silence for {text!r}")
        audio = cut(samples, rate, spans[0], sample_rate)
        if max_samples is None or len(audio) <= max_samples:
            return audio
        if params.speed >= MAX_SPEED:
            raise EngineError(f"{text!r} does not fit in {max_samples} samples even at {MAX_SPEED} wpm")
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
    spans = audible_spans(samples, min_gap=round(SPLIT_GAP_S * rate))
    if len(spans) != len(words):
        return [synthesize_word(w, speaker, params, sample_rate, max_samples) for w in words]
    out = []
    for word, span in zip(words, spans, strict=True):
        audio = cut(samples, rate, span, sample_rate)
        if max_samples is not None and len(audio) > max_samples:
            audio = synthesize_word(word, speaker, params, sample_rate, max_samples)
        out.append(audio)
    return out


# -------------------------------------------------------------------------------- voice discovery


def _voice_table(option: str) -> list[str]:
    return _espeak_text([f"--voices={option}"]).splitlines()[1:]


def _all_english_voices() -> list[str]:
    """espeak-ng's own English voices; MBROLA voices (``mb/...``) belong to the ``mbrola`` engine."""
    names = []
    for line in _voice_table("en"):
        fields = line.split()
        if len(fields) < 5 or fields[4].startswith(("!v/", "mb/")):
            continue  # a variant listed among the languages, or an MBROLA voice
        names.append(fields[1])
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
    except EngineError:
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
    """English espeak-ng voices that work here, duplicates removed."""
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


# ---------------------------------------------------------------------------------------- engines


class EspeakEngine(Engine):
    """espeak-ng's formant voices: accent x variant speakers, random pitch, speed and amplitude."""

    name = "espeak"
    binary = "espeak-ng"
    install = "apt-get install espeak-ng"
    peak = None  # amplitude (-a) is one of the drawn parameters
    batch_words = BATCH_WORDS  # words per call, all with the same parameters

    def __init__(self, voices: Sequence[str] | None = None, variants: Sequence[str] | None = None) -> None:
        self.chosen_voices, self.chosen_variants = voices, variants

    def speakers(self) -> list[str]:
        return list_speakers(self.chosen_voices, self.chosen_variants)

    def version(self) -> str:
        return espeak_version()

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        params = SpeechParams.sample(rng)
        try:
            audio = synthesize_words(words, voice, params, max_samples=MAX_WORD_SAMPLES)
        except EngineError:  # one word failed the whole call: find which, one call each
            return each_word(words, lambda w, _: synthesize_word(w, voice, params, max_samples=MAX_WORD_SAMPLES),
                             lambda: asdict(params))  # fmt: skip
        return [Rendition(a, asdict(params)) for a in audio]


class MbrolaEngine(EspeakEngine):
    """MBROLA diphone voices (recorded human speakers) through espeak-ng's front end and prosody."""

    name = "mbrola"
    binary = "mbrola"
    install = "run training/setup_speech.sh (Debian mbrola and mbrola-* voices, contrib/non-free)"
    voices = MBROLA_VOICES
    peak = 0.5

    def speakers(self) -> list[str]:
        """The listed voices whose diphone database is installed (variants do not apply to MBROLA)."""
        return [v for v in self.voices if (MBROLA_DATA / v.split("-")[1] / v.split("-")[1]).is_file()]
