"""Ground truth of a labelled stream: the CSV of spoken words (start, end, label[, word])."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, absence

HEADER = ["start", "end", "label"]
WORD_COLUMN = "word"  # optional fourth column: the word spoken
END_SLACK_SECONDS = 0.05  # labels may end this far past the audio (rounding in the CSV)


@dataclass(frozen=True)
class Occurrence:
    """One labelled word in the stream: its audible span in seconds."""

    start: float
    end: float
    label: str
    word: str = ""  # the word spoken, when the labels file says

    @property
    def said(self) -> str:
        return self.word or self.label


def read_ground_truth(path: str | os.PathLike) -> list[Occurrence]:
    """The occurrences of a ``start,end,label[,word]`` CSV; a malformed file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"labels file {path} {absence(path)}: pass --labels S.csv (written by training/stream_builder.py)"
        )
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header not in (HEADER, [*HEADER, WORD_COLUMN]):
        raise UserError(f"labels file {path} must start with the header row start,end,label[,word]")
    return [_occurrence(path, number, row, header) for number, row in enumerate(rows[1:], start=2) if row]


def _occurrence(path: Path, line: int, row: list[str], header: list[str]) -> Occurrence:
    where = f"labels file {path} line {line}"
    if len(row) != len(header) or not row[2].strip():
        raise UserError(f"{where}: expected {','.join(header)}, got {','.join(row)!r}")
    try:
        start, end = float(row[0]), float(row[1])
    except ValueError:
        raise UserError(
            f"{where}: start and end must be numbers of seconds, got {row[0]!r}, {row[1]!r}"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
        raise UserError(f"{where}: need 0 <= start <= end, got start {start}, end {end}")
    return Occurrence(start, end, row[2].strip(), row[3].strip() if len(row) > 3 else "")
