"""ssamba-stream: streaming keyword spotting with SSAMBA, the self-supervised bidirectional audio Mamba.

The top-level package stays free of torch so that the on-device runtime installs and imports
without it; the PyTorch model lives in ``ssamba_stream.model``.
"""

__version__ = "0.1.0"
