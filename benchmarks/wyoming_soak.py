"""Soak test of `ssamba-stream wyoming`: many clients streaming in real time, events and memory checked.

Starts the server (the CLI, bundled model) on a free port, then ``--clients`` clients each replay
examples/keywords.wav in real time (1024-sample chunks of 16 kHz 16-bit mono, paced by the clock)
over and over for ``--minutes``. Every replay must give exactly the detections a single-stream
KeywordSpotter gives; the server's resident memory is sampled every 10 s. Prints one line per
sample and a summary.

    python benchmarks/wyoming_soak.py [--clients 32] [--minutes 2.5] [--backend openvino]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import async_read_event, async_write_event
from wyoming.ping import Ping

from ssamba_stream.audio import load_audio
from ssamba_stream.spotter import KeywordSpotter

ROOT = Path(__file__).resolve().parents[1]
STEP = 1024


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(port: int, frames: np.ndarray, expected: list, until: float, counts: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(np.random.default_rng().uniform(0, 1.0))  # clients start at different phases
    while time.monotonic() < until:
        await async_write_event(AudioStart(16000, 2, 1).event(), writer)
        started = time.monotonic()
        for n, start in enumerate(range(0, len(frames), STEP)):
            await async_write_event(
                AudioChunk(16000, 2, 1, frames[start : start + STEP].tobytes()).event(), writer
            )
            await asyncio.sleep(max(0.0, started + (n + 1) * STEP / 16000 - time.monotonic()))
        await async_write_event(AudioStop().event(), writer)
        await async_write_event(Ping().event(), writer)
        got = []
        while (event := await async_read_event(reader)) is not None and event.type != "pong":
            if event.type == "detection":
                got.append((event.data["name"], event.data["timestamp"]))
        counts["exact" if got == expected else "wrong"] += 1
    writer.close()


async def _soak(port: int, pid: int, clients: int, seconds: float) -> dict:
    audio = load_audio(ROOT / "examples" / "keywords.wav", 16000)
    frames = np.round(np.clip(audio, -1, 1 - 2**-15) * 32768).astype(np.int16)[:, None]
    spotter = KeywordSpotter()
    events = [
        e
        for start in range(0, len(frames), STEP)
        for e in spotter.process(frames[start : start + STEP], 16000)
    ]
    expected = [(e.label, round(e.time * 1000)) for e in events + spotter.finish()]
    counts = {"exact": 0, "wrong": 0}
    until = time.monotonic() + seconds
    tasks = [asyncio.create_task(_client(port, frames, expected, until, counts)) for _ in range(clients)]
    samples = []
    while not all(t.done() for t in tasks):
        samples.append(_rss_mib(pid))
        print(f"{len(samples) * 10:>5} s  server RSS {samples[-1]:.1f} MiB  replays exact {counts['exact']}, "
              f"wrong {counts['wrong']}", flush=True)  # fmt: skip
        await asyncio.wait(tasks, timeout=10)
    await asyncio.gather(*tasks)
    return {**counts, "rss": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--backend", default="onnxruntime", help="the server's backend")
    args = parser.parse_args()
    command = [
        sys.executable,
        "-m",
        "ssamba_stream.cli",
        "wyoming",
        "--uri",
        "tcp://127.0.0.1:0",
        "--backend",
        args.backend,
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = int(server.stderr.readline().rsplit(":", 1)[1])
        cpu_before = _cpu_seconds(server.pid)
        result = asyncio.run(_soak(port, server.pid, args.clients, args.minutes * 60))
        cpu = _cpu_seconds(server.pid) - cpu_before
        rss = result["rss"]
        print(f"{args.clients} clients, {args.minutes:g} min: {result['exact']} replays exact, {result['wrong']} wrong; "
              f"server RSS {rss[0]:.1f} MiB at start, {max(rss):.1f} max, {rss[-1]:.1f} at the end "
              f"; server CPU {cpu:.1f} s = {1000 * cpu / args.clients / (args.minutes * 60):.1f} ms per client-second")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
