"""Recorded human speech from Debian packages as ``_unknown_`` material for training.

Synthetic negatives are all synthesizer; a model should also hear real people say things that are
not keywords. ``hedgewars-data`` ships ~15 minutes of game exclamations by several actors, some
accented, some not in English. Lines that say a keyword ("Yessir", "Enemydown", "Comeonthen",
"Nooo") or come close to one ("Ooff"), and the grunts, are left out. The clips go to one word
folder of the training split only (never validation or test: no keyword is spoken in them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ssamba_stream.audio import load_audio

from .common import SAMPLE_RATE, SynthError, speaker_id

SOURCES = {"hedgewars": Path("/usr/share/games/hedgewars/Data/Sounds/voices")}
INSTALL = {"hedgewars": "apt-get install hedgewars-data (training/setup_speech.sh installs it)"}
FOLDER = "realspeech"  # the word folder: one more unknown word to the loader
EXCLUDED = (
    "nooo",
    "ooff",
    "yessir",
    "enemydown",
    "comeonthen",
    "ow",
    "jump",
    "laugh",
    "firepunch",
    "poison",
    "hmm",
)
MAX_SECONDS = 2.0  # longer lines are cut; the training loader crops 1 s windows anyway


def clips(source: str) -> list[Path]:
    """The usable recordings of ``source``, sorted; SynthError when its package is missing."""
    folder = SOURCES[source]
    files = sorted(folder.glob("*/*.ogg")) if folder.is_dir() else []
    if not files:
        raise SynthError(f"no {source} voice recordings in {folder}: {INSTALL[source]}")
    return [f for f in files if not f.stem.lower().startswith(EXCLUDED)]


def write(out: Path, source: str) -> list[dict[str, Any]]:
    """Write the recordings as 16 kHz clips under ``out/realspeech``; one synth_clips.csv row each."""
    (out / FOLDER).mkdir(exist_ok=True)
    rows = []
    for path in clips(source):
        audio = load_audio(path, SAMPLE_RATE)[: round(MAX_SECONDS * SAMPLE_RATE)]
        peak = float(np.max(np.abs(audio)))
        if peak > 0.99:
            audio = audio * (0.99 / peak)
        speaker = f"{source}:{path.parent.name}"
        sid = speaker_id(speaker)
        name = f"{FOLDER}/{sid}_nohash_{path.stem.lower()}.wav"
        sf.write(out / name, audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"file": name, "word": FOLDER, "speaker_id": sid, "speaker": speaker, "engine": source,
                     "start": 0, "end": audio.size, "gain_db": 0.0, "params": "{}"})  # fmt: skip
    return rows
