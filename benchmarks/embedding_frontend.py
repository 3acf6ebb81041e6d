"""Keywords on the teacher's frontend: would a spotter on ``speech_embedding`` hear held-out engines?

Issue 26 item 5 allows a separate, labelled model on the frontend of openWakeWord's
``speech_embedding`` (trained on real speech; ``training/teacher.py``). Before building one into
the runtime, this measures what it would give, scored exactly as ``benchmarks/cross_engine.py``
scores the bundled model (FRR at 1-32 false accepts per hour over a threshold sweep).

Each labelled stream (``training/stream_builder.py``) is embedded once, one row per 80 ms hop as a
live stream would make them (cached beside it as ``S.embeddings.npy``). A small classifier reads the
last 16 rows (1.28 s) at every hop: a bidirectional Mamba (``--arch ssamba``, the project's Vim
block) or openWakeWord's flat MLP (``--arch mlp``, the control). It trains on streams built from the
training split: a hop is the keyword whose word ended in the last 0.4 s, ignored while a keyword is
under way or just past, and ``_unknown_`` otherwise. The step with the best mean FRR on ``--choose``
(a held-out engine) is kept; ``--test`` streams are scored once, with it.

    python benchmarks/embedding_frontend.py --train train_a.wav train_b.wav \\
        --choose val_rhvoice_20db_120.wav --test test_reserved_20db_60.wav
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from cross_engine import score_posteriors
from torch import nn

from ssamba_stream.audio import load_audio
from ssamba_stream.evaluation import Occurrence, StreamPosteriors, read_ground_truth
from ssamba_stream.kws import DetectorConfig
from ssamba_stream.model.scan_mode import OFFLINE
from ssamba_stream.model.ssamba import Block, SSAMBAConfig
from ssamba_training.data import KWS12_KEYWORDS, UNKNOWN_LABEL
from ssamba_training.teacher import EMBEDDING_DIM, HOP, SpeechEmbedding

LABELS = (*KWS12_KEYWORDS, UNKNOWN_LABEL)
BACKGROUND = len(KWS12_KEYWORDS)
IGNORE = -1
HOP_SECONDS = HOP / 16000
CONTEXT = 16  # rows per window: 1.28 s of embeddings, as openWakeWord's classifiers read
AFTER_END = 0.4  # a hop is the keyword while its word ended at most this long ago
SETTLED = 1.0  # and ignored until this long after the end (the window still holds the word)


def stream_embeddings(wav: Path, teacher: SpeechEmbedding) -> np.ndarray:
    """(hops, 96) embeddings of a stream, cached beside it."""
    cache = wav.with_suffix(".embeddings.npy")
    if cache.exists() and cache.stat().st_mtime >= wav.stat().st_mtime:
        return np.load(cache)
    started = time.time()
    rows = teacher.every_hop(load_audio(wav, 16000))
    np.save(cache, rows)
    print(f"embedded {wav.name}: {len(rows)} hops in {time.time() - started:.0f} s", flush=True)
    return rows


def hop_targets(keywords: list[Occurrence], hops: int) -> np.ndarray:
    """Per-hop class (keyword index, BACKGROUND, or IGNORE) from the stream's keyword occurrences."""
    targets = np.full(hops, BACKGROUND, np.int64)
    ends = (np.arange(hops) + 1) * HOP_SECONDS
    for o in keywords:
        targets[(ends >= o.start) & (ends <= o.end + SETTLED)] = IGNORE
        targets[(ends >= o.end) & (ends <= o.end + AFTER_END)] = KWS12_KEYWORDS.index(o.label)
    return targets


def windows(rows: torch.Tensor, hops: torch.Tensor, starts: torch.Tensor | int = 0) -> torch.Tensor:
    """(len(hops), CONTEXT, 96): the rows up to each hop, the stream's first row (at ``starts`` in
    ``rows``, per hop) repeated before its start, so that no window reaches into another stream."""
    starts = torch.as_tensor(starts)
    index = torch.maximum(hops[:, None] + torch.arange(1 - CONTEXT, 1), starts.reshape(-1, 1))
    return rows[index]


class MambaHead(nn.Module):
    """Project the rows, a few bidirectional Mamba (Vim) blocks, mean over the window, classify."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        config = SSAMBAConfig(embed_dim=width, depth=depth, drop_path=0.1, tokens="frame")
        self.project = nn.Linear(EMBEDDING_DIM, width)
        rates = torch.linspace(0, config.drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(width)
        self.classify = nn.Linear(width, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, residual = self.project(x), None
        for block in self.blocks:
            hidden, residual = block(hidden, residual, OFFLINE)
        return self.classify(self.norm(residual + hidden).mean(dim=1))


def mlp_head(width: int) -> nn.Module:
    """openWakeWord's classifier shape: the window flattened, two hidden layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(CONTEXT * EMBEDDING_DIM, width),
        nn.LayerNorm(width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, len(LABELS)),
    )


@dataclass
class Stream:
    """A labelled stream's standardised embedding rows and per-hop targets."""

    wav: Path
    rows: torch.Tensor  # standardised embeddings
    keywords: list[Occurrence]
    targets: np.ndarray
    seconds: float  # audio length

    def posteriors(self, model: nn.Module, batch: int = 4096) -> StreamPosteriors:
        model.eval()
        with torch.no_grad():
            parts = [
                model(windows(self.rows, hops)).softmax(dim=1)
                for hops in torch.arange(len(self.rows)).split(batch)
            ]
        model.train()
        return StreamPosteriors(torch.cat(parts).numpy(), LABELS, HOP_SECONDS, self.seconds)

    def scores(self, model: nn.Module, smoothing: tuple[int, ...]) -> dict[int, dict[str, object]]:
        """cross_engine's figures at each smoothing length (in 80 ms hops)."""
        posteriors = self.posteriors(model)
        return {
            s: score_posteriors(posteriors, DetectorConfig(smoothing_blocks=s).checked(), self.keywords)
            for s in smoothing
        }


def load_streams(
    paths: list[Path],
    teacher: SpeechEmbedding,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> tuple[list[Stream], torch.Tensor, torch.Tensor]:
    """The streams, standardised by ``mean``/``std`` (default: their own, per dimension)."""
    raw = [torch.from_numpy(stream_embeddings(p, teacher)) for p in paths]
    if mean is None:
        every = torch.cat(raw)
        mean, std = every.mean(dim=0), every.std(dim=0) + 1e-6
    streams = []
    for path, rows in zip(paths, raw, strict=True):
        keywords = [o for o in read_ground_truth(path.with_suffix(".csv")) if o.label in KWS12_KEYWORDS]
        seconds = sf.info(str(path)).duration
        streams.append(Stream(path, (rows - mean) / std, keywords, hop_targets(keywords, len(rows)), seconds))
    return streams, mean, std


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    teacher = SpeechEmbedding(threads=args.threads)
    training, mean, std = load_streams(args.train, teacher)
    choose, _, _ = load_streams([args.choose], teacher, mean, std)
    tests, _, _ = load_streams(args.test, teacher, mean, std)
    rows = torch.cat([s.rows for s in training])
    offsets = np.cumsum([0] + [len(s.rows) for s in training])[:-1]
    targets = np.concatenate([s.targets for s in training])
    keyword_hops = np.flatnonzero((targets >= 0) & (targets < BACKGROUND))
    background_hops = np.flatnonzero(targets == BACKGROUND)
    stream_of = np.searchsorted(offsets, np.arange(len(targets)), side="right") - 1
    print(f"training hops: {len(keyword_hops)} keyword, {len(background_hops)} background", flush=True)
    model = MambaHead(args.width, args.depth) if args.arch == "ssamba" else mlp_head(args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=args.steps, pct_start=max(0.05, 2 / args.steps)
    )
    rng = np.random.default_rng(args.seed)
    best, started = None, time.time()
    smoothing = tuple(args.smoothing)
    for step in range(1, args.steps + 1):
        half = args.batch // 2
        picked = np.concatenate([rng.choice(keyword_hops, half), rng.choice(background_hops, half)])
        x = windows(rows, torch.from_numpy(picked), torch.from_numpy(offsets[stream_of[picked]]))
        x = x + args.noise * torch.randn_like(x)
        loss = nn.functional.cross_entropy(model(x), torch.from_numpy(targets[picked]), label_smoothing=0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            figures = choose[0].scores(model, smoothing)
            s, result = min(figures.items(), key=lambda item: item[1]["mean_frr"])
            line = f"step {step} loss {loss.item():.3f} choose mean FRR {100 * result['mean_frr']:.1f} (smoothing {s})"
            print(f"{line}, {time.time() - started:.0f} s", flush=True)
            if best is None or result["mean_frr"] < best[0]:
                best = (
                    result["mean_frr"],
                    step,
                    s,
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                )
    _, step, s, weights = best
    model.load_state_dict(weights)
    results = {"step": step, "smoothing": s, "args": {k: str(v) for k, v in vars(args).items()}}
    for stream in (choose[0], *tests):
        results[stream.wav.name] = stream.scores(model, (s,))[s]
    print(json.dumps(results, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    for stream in (choose[0], *tests):
        r = results[stream.wav.name]
        frr = " / ".join("-" if v is None else f"{100 * v:.1f}" for v in r["frr"].values())
        print(
            f"| {stream.wav.stem} | {args.arch} | {frr} | {100 * r['mean_frr']:.1f} (+-{100 * r['half_width_95']:.1f}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="streams of the training split")
    parser.add_argument("--choose", type=Path, required=True, help="held-out-engine stream: picks the step")
    parser.add_argument("--test", type=Path, nargs="*", default=[], help="streams scored once at the end")
    parser.add_argument("--arch", choices=("ssamba", "mlp"), default="ssamba")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian noise on the standardised rows")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--smoothing", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the embeddings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
