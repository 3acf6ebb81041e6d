"""Continuous training rows: a batch of clips played back to back, labelled per head window.

Clip training pools exactly one clip, but the deployed head averages the last W tokens at every
block end, wherever the words fall, over audio whose noise is set against the words (the stream
builder's SNR), not against a 1 s clip. Here a batch of clips becomes a few rows of stream: the
clips in a random order separated by random gaps, with background noise at an SNR over the
median word power of the row. Each block then gets the target the evaluation expects of it:

- the keyword, while the keyword's audible span lies wholly inside the head's window;
- no target (``IGNORE``) while a keyword is only partly inside: firing there is neither a hit
  missed nor a false accept, since evaluation takes a detection from the keyword's start to 1 s
  after its end (and two different whole keywords in one window get none either);
- ``_unknown_`` while any part of another word is inside, else ``_silence_``.

So the model learns to fire when the keyword has been heard, and to stay quiet on unknown
words, on the tails of words and on noise: what the stream asks of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .augment import TOKEN_SAMPLES, _rand
from .stream_builder import word_span

IGNORE = -100  # cross_entropy's ignore_index


@dataclass(frozen=True)
class LabelRoles:
    """Which label indices are keywords, and which ones mean unknown word and silence."""

    keywords: frozenset[int]
    unknown: int
    silence: int

    @classmethod
    def from_labels(cls, labels: Sequence[str], unknown: str, silence: str) -> LabelRoles:
        if unknown not in labels or silence not in labels:
            raise ValueError(
                f"continuous rows need the labels {unknown} and {silence}; the model has {list(labels)}"
            )
        index = {name: i for i, name in enumerate(labels)}
        keywords = frozenset(i for name, i in index.items() if name not in (unknown, silence))
        return cls(keywords, index[unknown], index[silence])


@dataclass(frozen=True)
class Rows:
    """Stream rows (rows, samples), and every word placed in them: (row, start, end, label) in samples."""

    audio: Tensor
    words: Tensor  # (n, 4) int64
    word_power: Tensor  # (rows,) median mean-square power over the row's word spans; 0 for none
    sources: Tensor  # (n,) int64: the batch index of each word's clip


def build_rows(
    waveforms: Tensor,
    labels: Tensor,
    clips_per_row: int,
    gap_seconds: tuple[float, float],
    roles: LabelRoles,
    *,
    multiple_of: int = TOKEN_SAMPLES,
    sample_rate: int = 16000,
    generator: torch.Generator | None = None,
) -> Rows:
    """Lay the batch's clips out in rows of ``clips_per_row``, a random gap before each clip.

    Rows are zero-padded at the end to a common length, a multiple of ``multiple_of`` samples
    (the step's block, so that every sample is in a completed block). Silence items add audio
    but no word; a word clip without an audible span counts from its first to its last sample.
    """
    batch = waveforms.shape[0]
    if clips_per_row < 1:
        raise ValueError(f"clips_per_row must be >= 1, got {clips_per_row}")
    device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(batch, generator=generator, device=device).tolist()
    gaps = (
        gap_seconds[0] + (gap_seconds[1] - gap_seconds[0]) * _rand((batch,), generator, waveforms)
    ) * sample_rate
    pieces: list[list[Tensor]] = []
    words: list[tuple[int, int, int, int]] = []
    sources: list[int] = []
    powers: list[list[float]] = []
    for slot, index in enumerate(order):
        row = slot // clips_per_row
        if row == len(pieces):
            pieces.append([])
            powers.append([])
        cursor = sum(piece.shape[0] for piece in pieces[row]) + int(gaps[slot])
        clip, label = waveforms[index], int(labels[index])
        pieces[row] += [clip.new_zeros(int(gaps[slot])), clip]
        if label == roles.silence:
            continue
        span = word_span(clip.detach().cpu().numpy()) or (0, clip.shape[0])
        words.append((row, cursor + span[0], cursor + span[1], label))
        sources.append(index)
        powers[row].append(float(clip[span[0] : span[1]].double().square().mean()))
    rows = [torch.cat(row) for row in pieces]
    length = -(-max(row.shape[0] for row in rows) // multiple_of) * multiple_of
    audio = torch.stack([torch.nn.functional.pad(row, (0, length - row.shape[0])) for row in rows])
    word_power = torch.tensor([float(np.median(p)) if p else 0.0 for p in powers], dtype=torch.float64)
    return Rows(
        audio,
        torch.tensor(words, dtype=torch.long).reshape(-1, 4),
        word_power,
        torch.tensor(sources, dtype=torch.long),
    )


def _head_windows(blocks: int, block: int, window: int) -> tuple[Tensor, Tensor]:
    """[start, end) tokens of the head's window at every block end."""
    ends = torch.arange(1, blocks + 1) * block
    return torch.clamp(ends - window, min=0), ends


def _tokens(start: int, end: int, token_samples: int) -> tuple[int, int]:
    """The tokens [first, last) that samples [start, end) occupy."""
    return start // token_samples, -(-end // token_samples)


def block_targets(
    words: Tensor, rows: int, blocks: int, block: int, window: int, roles: LabelRoles,
    token_samples: int = TOKEN_SAMPLES,
) -> Tensor:  # fmt: skip
    """(rows, blocks) targets for the head at every block end (see the module docstring).

    Block k's window holds tokens [max(0, end - window), end), end = (k + 1) * block; a word
    spanning samples [s, e) occupies tokens [s // token_samples, ceil(e / token_samples)).
    """
    starts, ends = _head_windows(blocks, block, window)
    targets = torch.full((rows, blocks), roles.silence, dtype=torch.long)
    whole_keyword = torch.full((rows, blocks), -1, dtype=torch.long)  # -2: two different keywords
    partial_keyword = torch.zeros(rows, blocks, dtype=torch.bool)
    for row, start, end, label in words.tolist():
        first, last = _tokens(start, end, token_samples)
        overlaps = (first < ends) & (last > starts)
        if label not in roles.keywords:
            targets[row, overlaps] = roles.unknown
            continue
        inside = (first >= starts) & (last <= ends)
        partial_keyword[row] |= overlaps & ~inside
        seen = whole_keyword[row]
        whole_keyword[row] = torch.where(
            inside & (seen == -1), label, torch.where(inside & (seen != label), -2, seen)
        )
    targets[partial_keyword] = IGNORE
    targets = torch.where(whole_keyword >= 0, whole_keyword, targets)
    targets[whole_keyword == -2] = IGNORE
    return targets


def block_words(
    words: Tensor, rows: int, blocks: int, block: int, window: int, token_samples: int = TOKEN_SAMPLES
) -> Tensor:
    """(rows, blocks) index into ``words`` of the one word the head's window holds whole, with no
    part of any other word in it; -1 elsewhere. Distillation compares the head with the teacher there.
    """
    starts, ends = _head_windows(blocks, block, window)
    whole = torch.full((rows, blocks), -1, dtype=torch.long)
    touching = torch.zeros(rows, blocks, dtype=torch.long)
    for index, (row, start, end, _label) in enumerate(words.tolist()):
        first, last = _tokens(start, end, token_samples)
        touching[row] += ((first < ends) & (last > starts)).long()
        whole[row] = torch.where((first >= starts) & (last <= ends), index, whole[row])
    return torch.where(touching == 1, whole, -1)
