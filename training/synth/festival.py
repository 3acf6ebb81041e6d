"""festival: its own text front end, lexicon and CART prosody over diphone and MBROLA voices.

Starting festival costs ~0.7 s, so one process speaks a whole list of words (a Scheme script with
one ``utt.save.wave`` per word, each guarded so that a failing word does not stop the others).
Rate comes from festival's ``Duration_Stretch``; pitch from a small tape-speed shift afterwards.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import read_int16, shift_pitch, trim_word
from .engine import Engine, Rendition

STRETCH_RANGE = (0.8, 1.3)  # Duration_Stretch: > 1 is slower
SEMITONE_RANGE = (-2.0, 2.0)


class FestivalEngine(Engine):
    """festival voices; kal_diphone, ked_diphone and cmu_us_slt_arctic_hts are the test's."""

    name = "festival"
    binary = "festival"
    install = "run training/setup_speech.sh (festival, festvox-* and festlex-* packages)"
    voices = ("don_diphone", "rab_diphone", "us1_mbrola", "us2_mbrola", "us3_mbrola", "en1_mbrola")
    reserved = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")

    def version(self) -> str:
        proc = subprocess.run(["festival", "--version"], capture_output=True, text=True)
        return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "unknown"

    def render(self, words: Sequence[str], voice: str, rng: np.random.Generator) -> list[Rendition]:
        params = {"stretch": round(float(rng.uniform(*STRETCH_RANGE)), 3),
                  "semitones": round(float(rng.uniform(*SEMITONE_RANGE)), 2)}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            lines = [f"(voice_{voice})", f"(Parameter.set 'Duration_Stretch {params['stretch']})"]
            lines += [
                f'(unwind-protect (utt.save.wave (SynthText "{word}") "{tmp}/{i}.wav" \'riff) (print "failed"))'
                for i, word in enumerate(words)
            ]
            script = Path(tmp) / "words.scm"
            script.write_text("\n".join(lines) + "\n")
            proc = subprocess.run(["festival", "--batch", str(script)], capture_output=True, text=True)
            error = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            out = []
            for i in range(len(words)):
                wav = Path(tmp) / f"{i}.wav"
                if not wav.is_file():
                    out.append(Rendition(None, params, f"festival wrote no audio ({error})"))
                    continue
                audio = trim_word(*read_int16(str(wav)))
                if audio is None:
                    out.append(Rendition(None, params, "produced silence"))
                else:
                    out.append(Rendition(shift_pitch(audio, params["semitones"]), params))
            return out
