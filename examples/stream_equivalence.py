"""Stream speech through the streaming SSAMBA KWS encoder, chunk by chunk, and compare with offline.

The streaming model limits each layer's backward scan to blocks of B tokens and carries the forward
scan's state across blocks, so feeding audio in arbitrary chunks must give exactly the offline
features of the whole recording. This script shows it on 20 s of espeak-ng speech (or a WAV file
you pass), with microphone-sized chunks of random length, and prints the real-time factor.

    python examples/stream_equivalence.py [audio.wav]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import soxr
import torch

from ssamba_stream.model.frontend import StreamingFbank
from ssamba_stream.model.registry import build_model

TEXT = (
    "yes. no. up. down. left. right. on. off. stop. go. "
    "the streaming model hears each word a hundred and sixty milliseconds after it ends. "
) * 2


def load_audio(path: str | None, rate: int) -> np.ndarray:
    """A WAV file, or espeak-ng speech when no file is given, as mono float32 at ``rate``."""
    if path is None:
        if shutil.which("espeak-ng") is None:
            sys.exit(
                "stream_equivalence: espeak-ng is missing: apt-get install espeak-ng, or pass a WAV file"
            )
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            subprocess.run(["espeak-ng", "-w", wav.name, TEXT], check=True)
            audio, source_rate = sf.read(wav.name, dtype="float32", always_2d=True)
    else:
        audio, source_rate = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), source_rate, rate).astype(np.float32)


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    model = build_model("ssamba-kws", num_classes=12).eval()
    frontend = model.make_frontend()
    audio = torch.from_numpy(load_audio(sys.argv[1] if len(sys.argv) > 1 else None, frontend.sample_rate))
    frames_per_block = model.config.backward_block * model.config.tshape

    offline = model.forward_features(frontend(audio[None]))

    streaming_fbank = StreamingFbank(frontend)
    states = model.init_stream_state(1)
    pending = torch.zeros(1, 0, frontend.num_mel_bins)
    outputs, rng, position, start = [], np.random.default_rng(0), 0, time.perf_counter()
    while position < audio.numel():
        size = int(rng.integers(160, 4000))  # 10 to 250 ms, as a microphone callback delivers
        pending = torch.cat([pending, streaming_fbank(audio[position : position + size])], dim=1)
        position += size
        usable = pending.shape[1] // frames_per_block * frames_per_block
        if usable:
            tokens, states = model.forward_chunk(pending[:, :usable], states)
            outputs.append(tokens)
            pending = pending[:, usable:]
    elapsed = time.perf_counter() - start
    streamed = torch.cat(outputs, dim=1)

    seconds = audio.numel() / frontend.sample_rate
    diff = (streamed - offline[:, : streamed.shape[1]]).abs().max().item()
    print(
        f"audio: {seconds:.1f} s, {streamed.shape[1]} of {offline.shape[1]} tokens streamed in whole blocks"
    )
    print(f"max |streaming - offline| over encoder features: {diff:.2e}")
    print(f"real-time factor (PyTorch eager, {torch.get_num_threads()} threads): {elapsed / seconds:.3f}")


if __name__ == "__main__":
    main()
