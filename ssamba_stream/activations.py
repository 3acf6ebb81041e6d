"""``--save-activations DIR``: the audio of each detection as a WAV plus a JSON line, to review them
and feed false accepts back into training as negatives.

A stream keeps the last few seconds of its audio at the model's rate (``AudioHistory``); when an
event fires, the ``seconds`` of audio up to the event's stream time (the end of the block that
fired it, so the word is inside) are written as 16-bit WAV, and one line describing it is
appended to ``DIR/activations.jsonl``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import UserError
from .kws import Event

LOG_NAME = "activations.jsonl"
CLIP_SECONDS = 2.0


class AudioHistory:
    """The last ``seconds`` of one stream's audio at ``rate``, addressed by stream sample index."""

    def __init__(self, seconds: float, rate: int) -> None:
        self.rate = rate
        self.size = int(round(seconds * rate))
        self.clear()

    def clear(self) -> None:
        """A new stream: nothing kept, stream time back to zero."""
        self.end = 0  # samples of the stream so far
        self._buffer = np.zeros(0, dtype=np.float32)

    def append(self, audio: np.ndarray) -> None:
        """Add the stream's next samples; ``seconds`` before them stay kept as well, so events that
        this chunk fires (however long it is) still find their clip."""
        self._buffer = np.concatenate([self._buffer, audio])[-(self.size + len(audio)) :]
        self.end += len(audio)

    def until(self, seconds: float, length: float) -> np.ndarray:
        """Up to ``length`` seconds of audio ending at stream time ``seconds`` (less if not kept)."""
        end = min(int(round(seconds * self.rate)), self.end)
        first = self.end - len(self._buffer)  # stream index of the buffer's first sample
        start = max(end - int(round(length * self.rate)), first)
        return self._buffer[start - first : end - first]


class ActivationSaver:
    """Writes each event's audio to ``folder`` as WAV and appends its JSON line to ``activations.jsonl``."""

    def __init__(
        self, folder: str | os.PathLike, model: str | os.PathLike, seconds: float = CLIP_SECONDS
    ) -> None:
        self.folder = Path(folder)
        self.model = Path(model).name
        self.seconds = seconds
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(
                f"--save-activations {self.folder} is a file: give a folder for the WAVs and their log"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create --save-activations folder {self.folder} ({exc.strerror}): pick another"
            ) from None

    def history(self, rate: int) -> AudioHistory:
        """What a stream must keep for this saver (a little more than a clip)."""
        return AudioHistory(self.seconds + 1.0, rate)

    def save(self, event: Event, history: AudioHistory, stream: str) -> Path:
        """The clip of ``event`` from ``history``; ``stream`` says which stream it came from."""
        now = datetime.now(timezone.utc)
        name = f"{now:%Y%m%dT%H%M%S.%f}-{_safe(stream)}-{event.label}-{round(event.time * 1000)}ms.wav"
        path = self.folder / name
        sf.write(path, history.until(event.time, self.seconds), history.rate, subtype="PCM_16")
        line = {"wav": name, **event.to_json(), "stream": stream, "model": self.model,
                "saved": now.isoformat(timespec="seconds")}  # fmt: skip
        with open(self.folder / LOG_NAME, "a") as log:
            log.write(json.dumps(line) + "\n")
        return path


def _safe(text: str) -> str:
    """A stream name fit for a file name (client addresses contain ':' and '.')."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]
