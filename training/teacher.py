"""A teacher that has heard real people: Google's ``speech_embedding``, as openWakeWord ships it.

Every voice the model trains on is synthetic, and it learns their engines as much as the words. The
``speech_embedding`` model (Apache-2.0, inside the ``openwakeword`` 0.5.x wheel as two ONNX files)
was trained on real speech from many speakers: a linear probe on its embedding, fit on the training
engines, reads our keywords from engines it never saw better than the student's own head does
(``benchmarks/teacher_probe.py``). Distillation (recipe ``distill``) asks the student's head inputs
to arrange words as the teacher does.

The teacher runs once per data set, here, not in the training loop: each clip gets the mean
embedding of the teacher's windows (0.76 s, every 80 ms) that hold its whole word (the nearest one
when the word is longer), stored with the clip's ``word/file.wav`` name. The wheel is installed
with ``pip install --no-deps openwakeword==0.5.1`` (its dependencies are not needed here).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssamba_stream.audio import load_audio
from ssamba_stream.errors import UserError

from .stream_builder import SAMPLE_RATE, word_span

MEL_HOP, MEL_FFT = 160, 512  # mel frame i covers samples [160 i, 160 i + 512)
WINDOW_FRAMES, WINDOW_STEP = 76, 8  # one embedding per 76 frames, every 8
WINDOW_SAMPLES = (WINDOW_FRAMES - 1) * MEL_HOP + MEL_FFT  # 0.78 s
HOP = WINDOW_STEP * MEL_HOP  # 80 ms between embeddings
PAD = SAMPLE_RATE // 2  # silence on each side, so that windows can hold a word at the clip's edge
EMBEDDING_DIM = 96
INSTALL = "pip install --no-deps openwakeword==0.5.1"


class TeacherError(UserError):
    """The teacher cannot run or its file cannot be used: one line for the user."""


def clip_key(path: str | Path) -> str:
    """``word/file.wav``: the name a clip has in every copy of a Speech Commands layout."""
    parts = Path(path).parts
    return "/".join(parts[-2:])


class SpeechEmbedding:
    """openWakeWord's mel front end and ``speech_embedding`` network, on onnxruntime's CPU."""

    def __init__(self, threads: int = 2) -> None:
        spec = importlib.util.find_spec("openwakeword")
        if spec is None or spec.origin is None:
            raise TeacherError(f"the speech_embedding teacher needs openWakeWord's wheel: {INSTALL}")
        import onnxruntime

        models = Path(spec.origin).parent / "resources" / "models"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        providers = ["CPUExecutionProvider"]
        self.mel = onnxruntime.InferenceSession(
            str(models / "melspectrogram.onnx"), options, providers=providers
        )
        self.net = onnxruntime.InferenceSession(
            str(models / "embedding_model.onnx"), options, providers=providers
        )

    def word_embedding(self, audio: np.ndarray) -> np.ndarray:
        """(96,) embedding of the word in a float clip in [-1, 1] (the whole clip if no word is found)."""
        span = word_span(audio) or (0, audio.size)
        padded = np.pad(audio.astype(np.float32) * 32767.0, (PAD, PAD))
        mel = self._mel(padded)
        starts = np.arange(0, mel.shape[0] - WINDOW_FRAMES + 1, WINDOW_STEP)
        first, last = (PAD + span[0]) / MEL_HOP, (PAD + span[1] - WINDOW_SAMPLES) / MEL_HOP
        holding = starts[(starts <= first) & (starts >= last)]
        if holding.size == 0:
            centre = (PAD + (span[0] + span[1]) / 2) / MEL_HOP - WINDOW_FRAMES / 2
            holding = starts[[int(np.argmin(np.abs(starts - centre)))]]
        return self._embed(np.stack([mel[s : s + WINDOW_FRAMES] for s in holding])).mean(axis=0)

    def every_hop(self, audio: np.ndarray, batch: int = 750) -> np.ndarray:
        """(hops, 96): row i embeds the last 76 mel frames (0.78 s) of a float recording in [-1, 1]
        up to sample 1280 * (i + 1), silence before its start, as openWakeWord streams them.

        The mel model clamps each call's output 80 dB below that call's loudest value, so the frames
        are made one hop (1280 samples and 352 of context) per call, as a live stream makes them:
        a row never depends on later audio, however the recording is cut."""
        hops = audio.size // HOP
        behind = -(-(WINDOW_FRAMES - WINDOW_STEP) // WINDOW_STEP)  # earlier hops an embedding reaches into
        context = MEL_FFT - MEL_HOP
        padded = np.concatenate(
            [np.zeros(behind * HOP + context, np.float32), audio.astype(np.float32) * 32767.0]
        )
        mel = np.concatenate(
            [self._mel(padded[k * HOP : (k + 1) * HOP + context]) for k in range(behind + hops)]
        )
        first = (behind + 1) * WINDOW_STEP - WINDOW_FRAMES  # row 0's first frame
        starts = range(first, first + WINDOW_STEP * hops, WINDOW_STEP)
        windows = [mel[s : s + WINDOW_FRAMES] for s in starts]
        rows = [self._embed(np.stack(windows[i : i + batch])) for i in range(0, hops, batch)]
        return np.concatenate(rows) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)

    def _mel(self, samples: np.ndarray) -> np.ndarray:
        """(frames, 32) log-mel frames, one per 160 samples, scaled as openWakeWord scales them."""
        return self.mel.run(None, {"input": samples[None]})[0].reshape(-1, 32) / 10.0 + 2.0

    def _embed(self, windows: np.ndarray) -> np.ndarray:
        """(n, 96) embeddings of (n, 76, 32) mel windows."""
        return self.net.run(None, {"input_1": windows[..., None].astype(np.float32)})[0].reshape(
            -1, EMBEDDING_DIM
        )


def embed_folder(root: Path, teacher: SpeechEmbedding, progress: bool = True) -> dict[str, np.ndarray]:
    """The word embedding of every clip under ``root`` (Speech Commands layout, noise folder skipped)."""
    clips = sorted(p for p in root.glob("*/*.wav") if not p.parent.name.startswith("_"))
    if not clips:
        raise TeacherError(f"no word/*.wav clips under {root}: point --data at a Speech Commands layout")
    out = {}
    for i, path in enumerate(clips):
        out[clip_key(path)] = teacher.word_embedding(load_audio(path, SAMPLE_RATE))
        if progress and (i + 1) % 2000 == 0:
            print(f"teacher: {i + 1}/{len(clips)} clips", file=sys.stderr, flush=True)
    return out


def save_embeddings(embeddings: dict[str, np.ndarray], out: Path) -> None:
    """Write ``out`` (.npz: keys, embeddings) atomically."""
    keys = sorted(embeddings)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez(
        partial, keys=np.array(keys), embeddings=np.stack([embeddings[k] for k in keys]).astype(np.float32)
    )
    partial.replace(out)


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Clip name -> teacher embedding, standardised per dimension over the file (mean 0, std 1)."""
    try:
        with np.load(path) as data:
            keys, values = data["keys"], data["embeddings"].astype(np.float32)
    except (OSError, KeyError, ValueError) as error:
        raise TeacherError(
            f"cannot read teacher embeddings {path} ({error}): make them with python -m ssamba_training.teacher"
        ) from None
    values = (values - values.mean(axis=0)) / (values.std(axis=0) + 1e-6)
    return dict(zip(keys.tolist(), values, strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssamba_training.teacher",
        description="Teacher (speech_embedding) word embeddings of every clip of a data set, for distillation.",
    )
    parser.add_argument("--data", type=Path, required=True, help="data set root (Speech Commands layout)")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        embeddings = embed_folder(args.data, SpeechEmbedding(args.threads))
        save_embeddings(embeddings, args.out)
    except TeacherError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(embeddings)} teacher embeddings to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
