"""Keyword spotting from Python: the bundled model on a recording, fed the way a microphone would.

``KeywordSpotter`` takes audio in chunks of any size, rate and sample format (here: the example
recording read as int16 blocks of 30 ms), keeps the model's state between chunks and
returns an event the moment a keyword is heard. ``process_file`` does the same for a whole file.

    python examples/keyword_spotter.py [audio.wav]
"""

from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf

from ssamba_stream import KeywordSpotter

EXAMPLE = Path(__file__).resolve().parent / "keywords.wav"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLE
    spotter = (
        KeywordSpotter()
    )  # the bundled 12-class model; KeywordSpotter("my.onnx", threshold=0.7) for others
    print(f"labels: {', '.join(spotter.labels)}; one step per {spotter.block_seconds * 1000:.0f} ms")

    audio, rate = sf.read(path, dtype="int16")  # integer PCM, any rate, mono or (samples, channels)
    chunk = int(0.03 * rate)  # a 30 ms microphone callback
    for start in range(0, len(audio), chunk):
        for event in spotter.process(audio[start : start + chunk], rate):
            print(f"{event.time:7.2f} s  {event.label:<6} score {event.score:.2f}")
    for event in spotter.finish():
        print(f"{event.time:7.2f} s  {event.label:<6} score {event.score:.2f}")
    print(f"{spotter.seconds:.1f} s of audio, real-time factor {spotter.real_time_factor:.3f}")

    # The whole file at once gives the same events: the stream does not depend on the chunking.
    print("process_file:", ", ".join(f"{e.label}@{e.time:.2f}s" for e in spotter.process_file(path)))


if __name__ == "__main__":
    main()
