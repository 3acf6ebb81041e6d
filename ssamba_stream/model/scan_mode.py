"""How a forward pass runs its mixers: backward block size, look-ahead and scan form, as one argument.

A bidirectional SSAMBA layer runs its backward scan over the whole input (offline, as published)
or inside blocks of B tokens (so that it streams); the selective scan itself has several forms
(training scans, the CUDA kernel, and standard-op forms that trace to ONNX). As kws_streaming's
modes, these choices travel with the call (``model.forward_features(fbank, mode=...)``) and are
never written into the model, so one model serves several block sizes at once (dynamic-chunk
training, evaluation at several latencies, DDP) without state shared between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .graph_scan import GRAPH_SCANS
from .scan import SCAN_IMPLS, selective_scan

# Every name a mode's ``scan`` may take: the selective_scan implementations and the graph forms.
SCAN_FORMS: dict[str, Callable[..., Any]] = {
    **{impl: partial(selective_scan, impl=impl) for impl in SCAN_IMPLS},
    **GRAPH_SCANS,
}


@dataclass(frozen=True)
class ScanMode:
    """block: backward block in tokens (None: the whole input, offline only); lookahead: tokens of
    the next block the backward scan also sees; scan: a name in ``SCAN_FORMS``."""

    block: int | None = None
    lookahead: int = 0
    scan: str = "auto"

    def __post_init__(self) -> None:
        if self.block is not None and (isinstance(self.block, bool) or self.block < 1):
            raise ValueError(
                f"the backward block must be None or a positive number of tokens, got {self.block}"
            )
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {self.lookahead}")
        if self.lookahead and self.block is None:
            raise ValueError("lookahead only applies to a block-local backward: give a backward block too")
        if self.scan not in SCAN_FORMS:
            raise ValueError(f"unknown scan form {self.scan!r}: choose one of {', '.join(SCAN_FORMS)}")

    @property
    def scan_fn(self) -> Callable[..., Any]:
        """The selective scan this mode runs (selective_scan's contract)."""
        return SCAN_FORMS[self.scan]


OFFLINE = ScanMode()
