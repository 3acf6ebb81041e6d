"""A bank of simulated room impulse responses, computed once and stored with the data set.

Training clips are dry (a synthesizer's output at the microphone); a person talking to a device
is heard through a room. Random shoebox rooms (3-10 x 3-8 x 2.4-4 m, RT60 0.15-0.9 s, air
absorption) with random talker and microphone positions, simulated with pyroomacoustics' hybrid
image-source (order 3) + ray-tracing model (~0.2 s per response), give the training loader
something to convolve with (``augment.rir_probability``). Only the build needs pyroomacoustics;
the loader reads the bank with NumPy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import SAMPLE_RATE, SynthError, rng

RIR_FILE = "room_impulses.npz"
ROOM_RANGE = ((3.0, 10.0), (3.0, 8.0), (2.4, 4.0))  # length, width, height in metres
RT60_RANGE = (0.15, 0.9)  # seconds
WALL_MARGIN = 0.5  # talker and microphone stay this far from walls
MAX_SECONDS = 0.8  # responses are cut here (fades to < -40 dB for most rooms)


def _one(generator: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    import pyroomacoustics as pra

    dims = np.array([generator.uniform(*r) for r in ROOM_RANGE])
    rt60 = float(generator.uniform(*RT60_RANGE))
    try:
        absorption, _ = pra.inverse_sabine(rt60, dims)
    except ValueError:  # this RT60 is unreachable in this room: the most absorbent walls instead
        absorption = 0.99
    room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=3,
                       ray_tracing=True, air_absorption=True)  # fmt: skip
    talker, mic = (generator.uniform(WALL_MARGIN, dims - WALL_MARGIN) for _ in range(2))
    room.add_source(talker)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)[: round(MAX_SECONDS * SAMPLE_RATE)]
    info = {"rt60": rt60, "distance": float(np.linalg.norm(talker - mic)), "volume": float(np.prod(dims))}
    return rir / float(np.max(np.abs(rir))), info


def build_bank(folder: Path, count: int, seed: int) -> dict[str, object]:
    """Write ``count`` responses to ``folder/room_impulses.npz``; returns a summary for the manifest."""
    try:
        import pyroomacoustics  # noqa: F401
    except ImportError:
        raise SynthError("--rirs needs pyroomacoustics: pip install -e '.[speech]'") from None
    generator = rng(seed, 3)
    rirs, infos = zip(*(_one(generator) for _ in range(count)), strict=True)
    lengths = np.array([r.size for r in rirs], dtype=np.int64)
    bank = np.zeros((count, int(lengths.max())), dtype=np.float32)
    for row, rir in zip(bank, rirs, strict=True):
        row[: rir.size] = rir
    np.savez_compressed(folder / RIR_FILE, rirs=bank, lengths=lengths,
                        rt60=np.array([i["rt60"] for i in infos]), distance=np.array([i["distance"] for i in infos]))  # fmt: skip
    return {"file": RIR_FILE, "count": count, "rt60_s": RT60_RANGE, "room_m": ROOM_RANGE}


def load_bank(path: str | Path) -> list[np.ndarray]:
    """The responses of a bank written by :func:`build_bank`, each at its own length."""
    with np.load(path) as bank:
        return [row[:n].copy() for row, n in zip(bank["rirs"], bank["lengths"], strict=True)]
