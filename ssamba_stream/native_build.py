"""Where natively compiled kernels are cached: per CPU, since they are built for its instruction set.

Torch-free, so the serving runtime's kernel (runtime/host_scan.py) and the training scan's
(model/native_scan.py) share one cache layout: ``$XDG_CACHE_HOME/ssamba_stream`` or
``~/.cache/ssamba_stream``.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path


def cpu_tag() -> str:
    """The machine, and on x86_64 a hash of the CPU's feature flags: a library is built for them."""
    machine = platform.machine()
    if machine != "x86_64":
        return machine
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        flags = ""
    return f"{machine}-{hashlib.sha1(flags.encode()).hexdigest()[:8]}"


def cache_root() -> Path:
    """The folder under which compiled kernels are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssamba_stream"


def native_cflags() -> list[str]:
    """x86_64's baseline is SSE2; this CPU's vector width makes the scans 2-4x faster (libraries are
    cached per CPU). aarch64's baseline already has NEON."""
    return ["-march=native"] if platform.machine() == "x86_64" else []
