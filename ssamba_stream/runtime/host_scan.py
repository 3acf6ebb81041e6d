"""The step graph's block scan as a native kernel for the serving runtime (csrc/block_scan.cpp).

About 60% of a batched step's CPU time in onnxruntime is the block scan's elementwise operators,
each a separate pass over memory (benchmarks/RESULTS.md, "Serving"). This kernel runs the same
recurrence with each eight channels' state in vector registers. It needs no torch and no
onnxruntime headers: the .cpp (package data) is compiled with the system's C++ compiler (``$CXX``,
else ``g++``) on first use into ``~/.cache/ssamba_stream/host-<cpu>/`` and loaded with ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..native_build import cache_root, cpu_tag, native_cflags

_SOURCE = Path(__file__).resolve().parent / "csrc" / "block_scan.cpp"
_INCLUDE = Path(__file__).resolve().parent.parent / "model" / "csrc"  # fast_math.h
_FLOATS = ctypes.POINTER(ctypes.c_float)


class HostBlockScan:
    """``BlockScan`` of ssamba_stream/model/block_scan.py (softplus, then the scan) on numpy arrays."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._scan = library.ssamba_block_scan
        self._scan.restype = None
        self._scan.argtypes = [ctypes.c_int64] * 5 + [_FLOATS] * 10
        library.ssamba_block_scan_max_length.restype = ctypes.c_int64
        self.max_length = int(library.ssamba_block_scan_max_length())

    def __call__(
        self,
        u: np.ndarray,
        dt: np.ndarray,
        A: np.ndarray,
        B: np.ndarray,
        C: np.ndarray,
        D: np.ndarray,
        z: np.ndarray,
        initial_state: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shapes as the torch module's: u, dt (before softplus), z (b, g, L, d); A (g, n, d);
        B, C (b, g, L, n); D (g, 1, d); initial_state (b, g, n, d). Returns y (b, g, L, d) and the
        last state."""
        batch, groups, length, d = u.shape
        n = A.shape[1]
        if length > self.max_length:
            raise ValueError(f"the host scan takes blocks of at most {self.max_length} tokens, not {length}")
        expected = {
            "dt": (dt, u.shape), "z": (z, u.shape), "A": (A, (groups, n, d)),
            "B": (B, (batch, groups, length, n)), "C": (C, (batch, groups, length, n)),
            "D": (D, (groups, 1, d)), "initial_state": (initial_state, (batch, groups, n, d)),
        }  # fmt: skip
        for name, (value, shape) in expected.items():
            if value.shape != shape:
                raise ValueError(f"block scan input {name} has shape {value.shape}, expected {shape}")
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (u, dt, A, B, C, D, z, initial_state)]
        y = np.empty((batch, groups, length, d), np.float32)
        last = np.empty((batch, groups, n, d), np.float32)
        pointers = [a.ctypes.data_as(_FLOATS) for a in (*arrays, y, last)]
        self._scan(batch, groups, length, n, d, *pointers)
        return y, last


def random_scan_inputs(seed: int, batch: int, length: int, n: int, d: int) -> dict[str, np.ndarray]:
    """Random inputs of one ``BlockScan`` call of both directions, by role, with decays in the range a
    trained model gives: for the backend's check of a graph's function against this kernel, and for
    tests and benchmarks of the kernel."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "u": normal(batch, 2, length, d), "dt": normal(batch, 2, length, d) - 1, "A": -np.exp(normal(2, n, d)),
        "B": normal(batch, 2, length, n), "C": normal(batch, 2, length, n), "D": normal(2, 1, d),
        "z": normal(batch, 2, length, d), "initial_state": normal(batch, 2, n, d),
    }  # fmt: skip


@functools.cache
def host_block_scan() -> HostBlockScan | str:
    """The compiled kernel, or why it cannot be had (built or loaded once per process)."""
    try:
        return HostBlockScan(ctypes.CDLL(str(_library())))
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def _library() -> Path:
    """The cached shared library for this source and CPU, compiled first if missing."""
    sources = _SOURCE.read_bytes() + (_INCLUDE / "fast_math.h").read_bytes()
    digest = hashlib.sha1(sources).hexdigest()[:12]
    library = cache_root() / f"host-{cpu_tag()}" / f"block_scan-{digest}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        built = Path(scratch) / library.name
        compile_library(_SOURCE, _INCLUDE, built)
        os.replace(built, library)  # atomic: concurrent processes never load a half-written library
    return library


def compile_library(source: Path, include: Path, output: Path) -> None:
    """Compile a block scan source (with fast_math.h in ``include``) into the shared library
    ``output``, as the runtime does (benchmarks/host_scan_kernel.py builds older revisions so)."""
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r} not found): install g++")
    command = [compiler, "-O3", "-fno-trapping-math", *native_cflags(), "-std=c++17", "-shared",
               "-fPIC", f"-I{include}", str(source), "-o", str(output)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {source.name} failed: {result.stderr.strip()[-300:]}")
