"""What an evaluation writes: the sweep CSV and the DET plot (matplotlib optional)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .matching import TARGET_FA_PER_HOUR, TARGET_FRR
from .stream import StreamEvaluation, describe_thresholds

MATPLOTLIB_MISSING = "install matplotlib: pip install 'ssamba-stream[eval]'"
TARGET_COLOUR = "black"  # not one of the colours the curves cycle through

if TYPE_CHECKING:  # matplotlib is optional: imported only where a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def write_sweep_csv(result: StreamEvaluation, path: str | os.PathLike) -> None:
    """The sweep, one row per threshold, for spreadsheets and RESULTS.md tables."""
    rows = [p.to_json() for p in result.sweep]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def require_matplotlib() -> None:
    """Fail early, before an hour of audio is processed, when the DET plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(MATPLOTLIB_MISSING) from None


def det_axes(title: str, most_fa_per_hour: float) -> tuple[Figure, Axes]:
    """An empty DET plot (FRR % against FA/h, the target marked) for one or more curves."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    axes.plot(TARGET_FA_PER_HOUR, 100 * TARGET_FRR, "*", ms=14, color=TARGET_COLOUR, label="target")
    axes.axvline(TARGET_FA_PER_HOUR, color=TARGET_COLOUR, ls=":", lw=1)
    axes.axhline(100 * TARGET_FRR, color=TARGET_COLOUR, ls=":", lw=1)
    axes.set_xscale("symlog", linthresh=1.0)  # linear up to 1 FA/h (0 included), logarithmic above
    axes.set_xlim(0, 2 * max(10.0, most_fa_per_hour))
    axes.set_ylim(0, 100)
    axes.set_xlabel("false accepts per hour")
    axes.set_ylabel("false-reject rate (%)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    return figure, axes


def plot_det(result: StreamEvaluation, path: str | os.PathLike) -> None:
    """DET curve: FRR % against FA/h, one point per threshold, with the target and the default marked."""
    fa, frr = [p.fa_per_hour for p in result.sweep], [100 * p.frr for p in result.sweep]
    title = f"{Path(result.stream).name}: {result.seconds / 60:.0f} min, {result.keywords} keywords"
    figure, axes = det_axes(title, max(fa))
    axes.plot(fa, frr, "o-", ms=3, label="thresholds")
    d = result.default
    axes.plot(
        d.fa_per_hour,
        100 * d.frr,
        "s",
        color="tab:orange",
        label=f"default ({describe_thresholds(result.detector)})",
    )
    axes.legend(loc="best")
    figure.savefig(path, dpi=120)
