"""Native CPU selective scan: the C++ kernel in csrc/selective_scan.cpp, compiled on first use
(with csrc/conv_silu.cpp, the layer's conv, which native_conv.py wraps: one library, one build).

Same contract as ``scan.selective_scan_ref``. The kernel runs sequentially in time with the state in
a local array, channels spread over torch's intra-op threads: float inputs with contiguous channels
(a Mamba layer's (batch, L, d) tensors as views) eight channels to a vector, the output then a view of
a channels-last tensor; others one (batch, channel) row at a time. Its backward replays the
forward, so memory stays O(output + batch * d * n) in both passes.

Shipping: the .cpp is package data; ``torch.utils.cpp_extension.load`` compiles it with g++ and
ninja on first use into ``~/.cache/ssamba_stream/torch-<version>-<machine>/`` (or under
$XDG_CACHE_HOME), later processes load the cached library. Without a compiler or ninja, or when the
build fails, or with SSAMBA_NATIVE_SCAN=0, ``selective_scan_native`` warns once and runs the
chunked torch scan instead.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..native_build import cache_root, cpu_tag, native_cflags
from .scan import ScanResult, _check_inputs, _compute_dtype, selective_scan_chunked

__all__ = ["ENV_VAR", "native_kernels_built", "native_scan_available", "selective_scan_native"]

ENV_VAR = "SSAMBA_NATIVE_SCAN"
_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = [_CSRC / "selective_scan.cpp", _CSRC / "conv_silu.cpp"]  # the module is defined in the first
_NAME = "ssamba_selective_scan"
_fallback_warned = False


def _build_dir() -> Path:
    """Per torch version and CPU: the library links against one libtorch and uses this CPU's ISA."""
    return cache_root() / f"torch-{torch.__version__}-{cpu_tag()}"


def _put_pip_ninja_on_path() -> None:
    """The ninja wheel's binary lies beside the venv's python, which a venv run without activation
    does not put on PATH; cpp_extension looks for ``ninja`` on PATH only."""
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


@functools.cache
def kernels() -> ModuleType | str:
    """The compiled kernels' module, or why it cannot be had (built or loaded once per process)."""
    try:
        from torch.utils import cpp_extension

        if not cpp_extension.is_ninja_available():
            _put_pip_ninja_on_path()
        if not cpp_extension.is_ninja_available():
            return "ninja is not installed (pip install ninja)"
        build_dir = _build_dir()
        build_dir.mkdir(parents=True, exist_ok=True)
        library = build_dir / f"{_NAME}.so"
        newest_source = max(path.stat().st_mtime for path in _CSRC.iterdir())
        if not library.exists() or library.stat().st_mtime < newest_source:
            print(
                f"ssamba-stream: compiling the native CPU selective scan into {build_dir} (once, ~1 min)",
                file=sys.stderr,
                flush=True,
            )
        openmp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
        return cpp_extension.load(
            name=_NAME,
            sources=[str(path) for path in _SOURCES],
            extra_cflags=["-O3", "-fno-trapping-math", *native_cflags(), *openmp],
            extra_ldflags=openmp,
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - a missing compiler or a failed build means "no kernel"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def _unavailable_reason() -> str | None:
    if os.environ.get(ENV_VAR, "1") == "0":
        return f"disabled by {ENV_VAR}=0"
    ext = kernels()
    return ext if isinstance(ext, str) else None


def native_kernels_built() -> bool:
    """Whether the native kernels can run here (compiled on the first call), without a warning:
    for callers that have a full-speed torch path of their own."""
    return _unavailable_reason() is None


def native_scan_available() -> bool:
    """Whether the native kernel can run here; compiles it on the first call. Warns once if not."""
    reason = _unavailable_reason()
    if reason is not None:
        _warn_fallback(reason)
    return reason is None


def _warn_fallback(reason: str) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"native CPU selective scan unavailable ({reason}); using the slower chunked torch scan. "
            f"Install g++ and ninja to enable it.",
            RuntimeWarning,
            stacklevel=3,
        )


def _parts(batch: int, dim: int, per_part_max: int, group: int) -> int:
    """How many row slices per batch element the backward splits d into.

    Slices of time-varying B/C gradients cost L * n each, so as few as keep every thread busy: the
    slice size is a divisor of ``per_part_max`` (so that a slice lies inside one group of B/C),
    whole groups of ``group`` channels (the kernel's channel-vector form needs them) where the
    divisors allow, the one with the shortest critical path ceil(tasks / threads) * size, the
    largest among equals.
    """
    threads = torch.get_num_threads()
    sizes = [size for size in range(per_part_max, 0, -1) if per_part_max % size == 0]
    sizes = [size for size in sizes if size % group == 0] or sizes
    best, best_cost = dim // per_part_max, math.inf
    for size in sizes:
        cost = math.ceil(batch * (dim // size) / threads) * size
        if cost < best_cost:
            best, best_cost = dim // size, cost
    return best


class _NativeScan(torch.autograd.Function):
    """The kernel's forward and backward; inputs already in the kernel's layouts and dtype.

    ``dt`` is the raw delta: the kernel adds ``bias`` and applies softplus itself, so no step-size
    tensor is allocated, and the backward's ``ddt`` is the raw delta's gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        u: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        z: Tensor | None,
        bias: Tensor | None,
        softplus: bool,
        h0: Tensor | None,
        block: int,
    ) -> tuple[Tensor, Tensor]:
        out, last = kernels().forward(u, dt, A, B, C, D, z, bias, softplus, h0, block)
        ctx.save_for_backward(u, dt, A, B, C, D, z, bias, h0)
        ctx.softplus, ctx.block = softplus, block
        ctx.channels_last = out.stride(1) == 1  # the channel-vector form ran
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor, dlast: Tensor):  # type: ignore[override]
        u, dt, A, B, C, D, z, bias, h0 = ctx.saved_tensors
        batch, dim, length = u.shape
        per_part = math.gcd(*(dim // M.shape[1] for M in (B, C) if M.dim() == 4), dim)
        parts = _parts(batch, dim, per_part, kernels().channel_group)
        inputs = (u, dt, A, B, C, D, z, bias, ctx.softplus, h0, ctx.block)
        if ctx.channels_last:  # the group backward reads it so; the row form makes its own contiguous copy
            dout = dout.transpose(1, 2).contiguous().transpose(1, 2)
        grads = kernels().backward(*inputs, dout, dlast.contiguous(), parts)
        du, ddt, dA, dB, dC, dD, dz, dh0 = grads

        def bc_grad(g: Tensor, M: Tensor) -> Tensor:
            if M.dim() == 2:
                return g.sum(0)
            return g.view(batch, M.shape[1], -1, length, M.shape[-1]).sum(2)

        return (
            du,
            ddt,
            dA.sum(0),
            bc_grad(dB, B),
            bc_grad(dC, C),
            None if D is None else dD.sum(0),
            None if z is None else dz,
            None if bias is None else ddt.sum((0, 2)),
            None,
            None if h0 is None else dh0,
            None,
        )


def _time_major(M: Tensor, dtype: torch.dtype) -> Tensor:
    """B or C for the kernel: fixed (d, n) contiguous, else a (batch, groups, L, n) view with
    contiguous n, which the (batch, L, n) columns of a Mamba layer's x_proj output already are."""
    M = M.to(dtype)
    if M.dim() == 2:
        return M.contiguous()
    if M.dim() == 3:
        M = M.unsqueeze(1)
    M = M.transpose(-1, -2)
    return M if M.stride(-1) == 1 else M.contiguous()


def selective_scan_native(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    reversed_blocks: int | None = None,
) -> ScanResult:
    """Selective scan through the native CPU kernel (the chunked torch scan, after one warning,
    where the kernel cannot be built). CPU tensors only.

    ``reversed_blocks=K``: time splits into blocks of K steps, each scanned from its last step to
    its first from zero state (a streaming layer's block-local backward direction, in time order;
    the last state is then the one after the last block's first step). With K >= L, one block: the
    whole input backward in time, which may start from ``initial_state``. Native only:
    ``ValueError`` where the kernel is not available, since the other forms would need the blocks
    cut out.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if u.device.type != "cpu":
        raise RuntimeError(f"the native selective scan runs on CPU tensors, got {u.device}; use impl='auto'")
    if reversed_blocks is not None and (
        reversed_blocks < 1 or (initial_state is not None and reversed_blocks < u.shape[-1])
    ):
        raise ValueError(
            "reversed_blocks needs a positive block size, and an initial state only with one block "
            "over the whole input (the others start from zero)"
        )
    if not native_scan_available():
        if reversed_blocks is not None:
            raise ValueError("reversed_blocks needs the native kernel, which is not available here")
        args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
        return selective_scan_chunked(*args, return_last_state)
    dtype_in, dtype = u.dtype, _compute_dtype(u)

    def prep(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(dtype).contiguous()

    # u, delta and z go in with their strides: the kernel reads (batch, L, d) views without a copy.
    out, last = _NativeScan.apply(
        u.to(dtype),
        delta.to(dtype),
        prep(A),
        _time_major(B, dtype),
        _time_major(C, dtype),
        prep(D),
        None if z is None else z.to(dtype),
        prep(delta_bias),
        delta_softplus,
        prep(initial_state),
        reversed_blocks or 0,
    )
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out
