"""``python -m ssamba_training.synth``: build a keyword data set from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .common import EngineError, SynthError
from .dataset import DEFAULT_KEYWORDS, SynthConfig, build_dataset


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as a SynthError (one line) instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SynthError(message)


def word_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of lowercase words (empty items dropped)."""
    return tuple(w.strip().lower() for w in text.split(",") if w.strip())


def name_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of names kept as written; ``none`` is the empty list."""
    return () if text.strip() == "none" else tuple(v.strip() for v in text.split(",") if v.strip())


def _renditions(text: str) -> dict[str, int]:
    out = {}
    for item in name_list(text):
        name, _, count = item.partition("=")
        if not count.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not ENGINE=N")
        out[name] = int(count)
    return out


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m ssamba_training.synth", description="Synthetic keyword data set in the Speech "
               "Commands v2 layout, spoken by many speech engines and voices.")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    p.add_argument("--keywords", type=word_list, default=DEFAULT_KEYWORDS, help="comma-separated")
    p.add_argument(
        "--unknown-words", type=word_list, default=None, help="comma-separated; default: a built-in list"
    )
    p.add_argument("--per-voice", type=int, default=3, help="renditions of each keyword per speaker")
    p.add_argument(
        "--unknown-per-voice", type=int, default=1, help="renditions of each unknown word per speaker"
    )
    p.add_argument("--renditions", type=_renditions, default={},
                   help="per-engine keyword renditions, e.g. pico=40,piper=80 (unknown words scale alike)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-engines", type=name_list, default=("espeak",),
                   help="engines (or engine:voice) for training, e.g. espeak,mbrola,festival,pico,piper")  # fmt: skip
    p.add_argument("--val-engines", type=name_list, default=None,
                   help="held-out validation engines (default rhvoice; none when --val-voices is given)")  # fmt: skip
    p.add_argument("--test-engines", type=name_list, default=None,
                   help="test engines' reserved voices (default: reserved = all of them; none when --test-voices is given)")  # fmt: skip
    p.add_argument("--val-voices", type=int, default=None,
                   help="training-engine speakers held out for validation (default 10%% without --val-engines)")  # fmt: skip
    p.add_argument("--test-voices", type=int, default=None,
                   help="training-engine speakers held out for test (default 10%% without --test-engines)")  # fmt: skip
    p.add_argument("--voices", type=word_list, default=None, help="espeak-ng voices, e.g. en-us,en-gb")
    p.add_argument("--variants", type=lambda s: tuple(v for v in s.split(",") if v), default=None,
                   help="espeak-ng variants, e.g. m3,f2,klatt")  # fmt: skip
    p.add_argument(
        "--max-speakers", type=int, default=None, help="per training engine: a random subset of its speakers"
    )
    p.add_argument("--noise-clips", type=int, default=8, help="files in _background_noise_")
    p.add_argument("--noise-seconds", type=float, default=30.0, help="length of each noise file")
    p.add_argument(
        "--rirs", type=int, default=0, help="simulated room impulse responses to store (pyroomacoustics)"
    )
    p.add_argument("--real-speech", type=name_list, default=(),
                   help="recorded speech for the training split's unknown words: hedgewars (hedgewars-data)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2: bad arguments or a missing engine)."""
    try:
        args = _parser().parse_args(argv)
        config = SynthConfig(**vars(args))
        started = time.perf_counter()
        manifest = build_dataset(config)
    except SynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    parts = ", ".join(f"{name} {c['clips']} from {c['speakers']} speakers" for name, c in counts.items())
    print(
        f"wrote {sum(c['clips'] for c in counts.values())} clips ({parts}) and "
        f"{len(manifest['background_noise'])} noise files to {config.out} in {time.perf_counter() - started:.1f} s"
    )
    skipped = manifest["skipped"]
    if skipped:
        shown = "; ".join(f"{s['speaker']} {s['word']!r}: {s['problem']}" for s in skipped[:10])
        more = f" (and {len(skipped) - 10} more, listed in synth.json)" if len(skipped) > 10 else ""
        print(f"skipped {len(skipped)} renditions a voice failed on: {shown}{more}")
    return 0
