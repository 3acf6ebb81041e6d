"""ssamba-stream: streaming keyword spotting with SSAMBA, the self-supervised bidirectional audio Mamba.

The top-level package stays free of torch so that the on-device runtime installs and imports
without it; the PyTorch model lives in ``ssamba_stream.model``. ``KeywordSpotter`` and
``StreamClassifier`` load lazily, so ``import ssamba_stream`` does not start onnxruntime.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["KeywordSpotter", "StreamClassifier", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("KeywordSpotter", "StreamClassifier"):
        from . import spotter

        return getattr(spotter, name)
    raise AttributeError(f"module 'ssamba_stream' has no attribute {name!r}")
