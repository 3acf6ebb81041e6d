"""Selective scan of Mamba-1 (S6): one contract, three implementations.

Per batch b, channel d and state n, with ``delta`` after the optional bias and softplus::

    h_t = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t = sum_n C_t[n] * h_t[n] + D[d] * u_t,        y_t *= silu(z_t) if z is given

Shapes follow mamba-ssm: u, delta, z (batch, d, L); A (d, n); B and C "variable" (batch, n, L),
grouped (batch, groups, n, L) or fixed (d, n); D and delta_bias (d,); states (batch, d, n).
Math runs in float32 (float64 for float64 inputs); the output takes u's dtype, the last state
keeps the compute dtype so that a streaming caller carries it without rounding.

- ``selective_scan_ref``: the sequential recurrence, the ground truth and the benchmark baseline.
- ``selective_scan_chunked``: chunked-parallel form with a hand-written backward, for CPU training.
- ``native_scan.selective_scan_native``: a C++ kernel compiled on first use, the default on CPU.
- mamba-ssm's CUDA kernel, used by ``selective_scan`` when it is installed and the tensors are on CUDA.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SCAN_IMPLS",
    "cuda_scan_available",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_ref",
]

DEFAULT_CHUNK_SIZE = 16
SCAN_IMPLS = ("auto", "ref", "chunked", "native", "cuda")
# Largest |log-decay| kept between a position and its chunk's reference point: exp() of it and of
# its negative stay far from fp32 overflow/underflow (e^40 ~ 2e17), so the in-chunk factorisation
# exp(c_t - c_s) = exp(c_t - m) * exp(m - c_s) is exact in floating point.
_MAX_LOG_DECAY = 40.0
# State elements in one (batch rows x chunk) tile of the chunked scan: enough work per op to amortise
# dispatch and threading, little enough (4 MiB in fp32) for the tile buffers to stay in cache.
_TILE_ELEMS = 1 << 20

ScanResult = Tensor | tuple[Tensor, Tensor]


# --------------------------------------------------------------------------- shared plumbing


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _check_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    initial_state: Tensor | None,
) -> None:
    """Raise a one-line ValueError for any shape outside the mamba-ssm contract."""
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, d, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if u.numel() == 0:
        raise ValueError(f"u must be non-empty, got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; A must be real (d, n)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (d={dim}, n), got shape {tuple(A.shape)}")
    n = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        if M.dim() == 2:
            ok = M.shape == (dim, n)
        elif M.dim() == 3:
            ok = M.shape == (batch, n, length)
        elif M.dim() == 4:
            ok = M.shape[0] == batch and M.shape[2:] == (n, length) and M.shape[1] > 0
            ok = ok and dim % M.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must be (d, n), (batch, n, L) or (batch, groups, n, L) with groups dividing d "
                f"(d={dim}, n={n}, batch={batch}, L={length}), got shape {tuple(M.shape)}"
            )
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and v.shape != (dim,):
            raise ValueError(f"{name} must be (d={dim},), got shape {tuple(v.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    if initial_state is not None and initial_state.shape != (batch, dim, n):
        raise ValueError(
            f"initial_state must be (batch, d, n)={(batch, dim, n)}, got {tuple(initial_state.shape)}"
        )


def _grouped(M: Tensor, batch: int, length: int) -> Tensor:
    """B or C as (batch, groups, n, L); fixed (d, n) becomes d groups of one channel (an expanded view)."""
    if M.dim() == 2:
        return M[None, :, :, None].expand(batch, -1, -1, length)
    if M.dim() == 3:
        return M.unsqueeze(1)
    return M


def discretisation_inputs(
    u: Tensor, delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool
) -> tuple[Tensor, Tensor]:
    """u and the effective step size in the compute dtype."""
    dtype = _compute_dtype(u)
    u = u.to(dtype)
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta


def finish_output(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in: torch.dtype) -> Tensor:
    """Skip connection, gate, cast back: the parts every implementation shares."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


# --------------------------------------------------------------------------- sequential reference


def selective_scan_ref(
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
) -> ScanResult:
    """Sequential selective scan: the ground truth the other implementations are checked against.

    The per-step decays and inputs are computed for all steps at once in a time-major layout and
    unbound up front, so the Python loop is a single fused multiply-add per step and its backward
    only touches per-step slices (no full-size zero tensors per step).
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    dtype_in = u.dtype
    u, delta = discretisation_inputs(u, delta, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    dtype = u.dtype
    A = A.to(dtype)
    Bg, Cg = (_grouped(M, batch, length).to(dtype) for M in (B, C))
    groups_b, groups_c = Bg.shape[1], Cg.shape[1]
    decay = torch.exp(torch.einsum("bdl,dn->lbdn", delta, A))  # (L, batch, d, n)
    x = (delta * u).view(batch, groups_b, dim // groups_b, length)
    inp = torch.einsum("bgel,bgnl->lbgen", x, Bg).reshape(length, batch, dim, -1)
    if initial_state is None:
        h = u.new_zeros(batch, dim, A.shape[1])
    else:
        h = initial_state.to(dtype)
    states = []
    for decay_t, inp_t in zip(decay.unbind(0), inp.unbind(0), strict=True):
        h = torch.addcmul(inp_t, decay_t, h)
        states.append(h)
    H = torch.stack(states).view(length, batch, groups_c, dim // groups_c, -1)
    y = torch.einsum("lbgen,bgnl->bgel", H, Cg).reshape(batch, dim, length)
    out = finish_output(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


# --------------------------------------------------------------------------- chunked-parallel form


def _tri(size: int, upper: bool, like: Tensor) -> Tensor:
    """Triangular ones, (s <= t) or (s >= t), built by comparison: torch.tril/triu (like
    torch.cumsum) take ~10 ms even on a 4x4 CPU tensor with 2 threads in torch 2.13."""
    idx = torch.arange(size, device=like.device)
    mask = idx[:, None] <= idx if upper else idx[:, None] >= idx
    return mask.to(like.dtype)


def _in_chunk_cumsum(steps: Tensor) -> Tensor:
    """Cumulative step along T of (batch, chunks, T, d), from each chunk's second step.

    Starting after the first step, a huge first step (a state reset) neither widens the log-decay
    range nor swamps the small steps after it in rounding; its decay goes with the carried state.
    """
    steps = torch.cat([torch.zeros_like(steps[:, :, :1]), steps[:, :, 1:]], 2)
    return _tri(steps.shape[2], False, steps) @ steps


def _time_major(t: Tensor, chunk: int) -> Tensor:
    """(batch, ..., L) -> (batch, chunks, chunk, ...), zero-padded to whole chunks, contiguous."""
    pad = -t.shape[-1] % chunk
    t = (F.pad(t, (0, pad)) if pad else t).movedim(-1, 1)
    return t.reshape(t.shape[0], -1, chunk, *t.shape[2:]).contiguous()


def _from_time_major(t: Tensor, length: int) -> Tensor:
    """Inverse of _time_major for a gradient: (batch, chunks, chunk, ...) -> (batch, ..., L)."""
    return t.flatten(1, 2)[:, :length].movedim(1, -1)


def _row_blocks(batch: int, chunk: int, dim: int, n: int) -> list[slice]:
    """Batch rows per tile, so that one chunk of them holds about _TILE_ELEMS state elements."""
    rows = max(1, min(batch, _TILE_ELEMS // (chunk * dim * n)))
    return [slice(b0, min(b0 + rows, batch)) for b0 in range(0, batch, rows)]


class _Block:
    """One block of batch rows: per-chunk views of the time-major inputs, and the tile buffers.

    The buffers are (m, T, d, n) tiles allocated once per call and reused through ``out=`` for
    every chunk: a tile stays in cache across the ops applied to it, and no (batch, L, d, n)
    tensor is ever allocated (on CPU, page faults on fresh large tensors cost as much as the math).
    """

    def __init__(self, saved: tuple[Tensor, ...], rows: slice, buffers: list[Tensor]) -> None:
        x_tm, dt_tm, B_tm, C_tm, rel, Em, Hs = saved
        self.m, _, self.chunk, self.dim = x_tm[rows].shape
        self.x, self.dt = x_tm[rows].unbind(1), dt_tm[rows].unbind(1)  # (m, T, d) per chunk
        self.B, self.C = B_tm[rows].unbind(1), C_tm[rows].unbind(1)  # (m, T, groups, n) per chunk
        self.rel, self.Em, self.Hs = rel[rows].unbind(1), Em[rows].unbind(1), Hs[rows].unbind(1)
        self.bufs = [buf[: self.m] for buf in buffers]

    def prefix(self, k: int, A: Tensor, lower: Tensor) -> tuple[Tensor, Tensor]:
        """Chunk k into the first and third buffers: E_t = exp(A (cd_t - mid)) and
        P_t = Hs_k + sum_{s<=t} x_s B_s / E_s = h_t / E_t (the GEMM's first input row feeds every row)."""
        E, W, P = self.bufs[:3]
        B = self.B[k]
        torch.mul(self.rel[k], A, out=E).exp_()
        torch.div(self.x[k].unsqueeze(-1), E, out=W)
        W.view(*B.shape[:3], -1, B.shape[3]).mul_(B.unsqueeze(-2))
        W[:, 0] += self.Hs[k]
        torch.matmul(lower, W.view(self.m, self.chunk, -1), out=P.view(self.m, self.chunk, -1))
        return E, P

    def bmv(self, big: Tensor, vec: Tensor) -> Tensor:
        """sum_n big[..., d, n] * vec[..., group(d), n] -> (m, T, d)."""
        n = vec.shape[-1]
        out = torch.bmm(big.view(-1, self.dim // vec.shape[2], n), vec.reshape(-1, n, 1))
        return out.view(self.m, self.chunk, self.dim)

    def bvm(self, vec: Tensor, big: Tensor, groups: int) -> Tensor:
        """sum_{d in group} vec[..., d] * big[..., d, n] -> (m, T, groups, n)."""
        per_group = self.dim // groups
        out = torch.bmm(vec.reshape(-1, 1, per_group), big.view(-1, per_group, big.shape[-1]))
        return out.view(self.m, self.chunk, groups, -1)


class _ChunkScan(torch.autograd.Function):
    """Chunked linear recurrence h_t = exp(dt_t A) h_{t-1} + x_t B_t, y_t = C_t . h_t (no D, no gate).

    Inside a chunk the log-decay c_t = A * cumsum(dt) (from the chunk's second step; the first
    step's decay goes with the carried state) is taken relative to the chunk's midpoint m,
    E_t = exp(c_t - m), so that h_t = E_t * (exp(m) h_in + cumsum_s(x_s B_s / E_s)): elementwise ops
    plus one small triangular GEMM for the in-chunk cumsum (far faster than torch.cumsum on CPU).
    The caller picks the chunk size so that |c_t - m| <= _MAX_LOG_DECAY, which keeps every
    exponential finite and normal. A loop over chunks carries the state, one tile (a block of
    batch rows x one chunk) at a time.

    Only the chunk-entry states are saved; the backward recomputes each tile's forward factors,
    then runs the same recurrence in reverse on the adjoint lambda_t = dL/dh_t through the same
    factorisation. Its decay gradient lambda_t exp(a_t) h_{t-1} equals R_t * P_{t-1}, a product of
    the two factorised sums, so it needs no extra exponentials and stays exact when exp(a_t)
    underflows. Layout is time-major (batch, chunks, T, d, n): contractions over n or d are
    batched matmuls and reductions over time go through BLAS.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, chunk: int
    ) -> tuple[Tensor, Tensor]:
        batch, dim, length = x.shape
        n = A.shape[1]
        x_tm, dt_tm = _time_major(x, chunk), _time_major(dt, chunk)  # (batch, nc, T, d)
        B_tm, C_tm = _time_major(B, chunk), _time_major(C, chunk)  # (batch, nc, T, groups, n)
        cd = _in_chunk_cumsum(dt_tm)  # (batch, nc, T, d)
        mid = 0.5 * (cd.amax(2) + cd.amin(2))  # (batch, nc, d): each chunk's reference point
        rel = (cd - mid.unsqueeze(2)).unsqueeze(-1)  # (batch, nc, T, d, 1)
        Em = torch.mul((dt_tm[:, :, 0] + mid).unsqueeze(-1), A).exp_()  # (batch, nc, d, n): entry -> mid
        Hs = torch.empty_like(Em)  # chunk-entry states scaled by Em
        saved = (x_tm, dt_tm, B_tm, C_tm, rel, Em, Hs)
        y = torch.empty_like(x_tm)
        last = x.new_empty(batch, dim, n)
        lower = _tri(chunk, False, x)
        blocks = _row_blocks(batch, chunk, dim, n)
        buffers = [x.new_empty(blocks[0].stop, chunk, dim, n) for _ in range(3)]
        for rows in blocks:
            blk = _Block(saved, rows, buffers)
            H = h0[rows] if h0 is not None else x.new_zeros(blk.m, dim, n)
            for k, y_k in enumerate(y[rows].unbind(1)):
                torch.mul(blk.Em[k], H, out=blk.Hs[k])
                E, P = blk.prefix(k, A, lower)
                h = P.mul_(E)
                y_k.copy_(blk.bmv(h, blk.C[k]))
                H = h[:, -1].clone()
            last[rows] = H
        ctx.save_for_backward(A, *saved)
        ctx.sizes = (length, h0 is not None)
        return _from_time_major(y, length).contiguous(), last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, g_last: Tensor | None):  # type: ignore[override]
        A, *saved = ctx.saved_tensors
        x_tm, dt_tm, B_tm, C_tm = saved[:4]
        length, has_h0 = ctx.sizes
        need_x, need_dt, need_A, need_B, need_C, need_h0 = ctx.needs_input_grad[:6]
        batch, nc, chunk, dim = x_tm.shape
        n, gb, gc = A.shape[1], B_tm.shape[3], C_tm.shape[3]
        gy_tm = _time_major(gy, chunk)
        grads = {
            name: torch.empty_like(like) if need else None
            for name, like, need in (
                ("x", x_tm, need_x),
                ("dt", x_tm, need_dt),
                ("B", B_tm, need_B),
                ("C", C_tm, need_C),
            )
        }
        dA = A.new_zeros(dim * n)
        dh0 = x_tm.new_empty(batch, dim, n)
        lower, upper = _tri(chunk, False, A), _tri(chunk, True, A)
        ones_n = A.new_ones(n)
        blocks = _row_blocks(batch, chunk, dim, n)
        ones_t = A.new_ones(blocks[0].stop * chunk)
        buffers = [A.new_empty(blocks[0].stop, chunk, dim, n) for _ in range(4)]
        for rows in blocks:
            blk = _Block(saved, rows, buffers)
            m = blk.m
            gy_k = gy_tm[rows].unbind(1)
            out = {name: (None if g is None else g[rows].unbind(1)) for name, g in grads.items()}
            lam = g_last[rows] if g_last is not None else A.new_zeros(m, dim, n)  # dL/dh at chunk end
            for k in range(nc - 1, -1, -1):
                E, P = blk.prefix(k, A, lower)
                G, R = blk.bufs[1], blk.bufs[3]
                # adjoint in the same factorisation: R_t = lambda_t E_t = sum_{s>=t} G_s, G_s = dL/dh_s E_s
                torch.mul(gy_k[k].unsqueeze(-1), E, out=G)
                G.view(m, chunk, gc, -1, n).mul_(blk.C[k].unsqueeze(-2))
                G[:, -1].addcmul_(E[:, -1], lam)
                torch.matmul(upper, G.view(m, chunk, -1), out=R.view(m, chunk, -1))
                lam = blk.Em[k] * R[:, 0]
                if need_dt or need_A:  # G <- dL/da_t = lambda_t exp(a_t) h_{t-1} = R_t P_{t-1}
                    torch.mul(R[:, 1:], P[:, :-1], out=G[:, 1:])
                    torch.mul(R[:, 0], blk.Hs[k], out=G[:, 0])
                if need_C:
                    out["C"][k].copy_(blk.bvm(gy_k[k], P.mul_(E), gc))
                if need_dt:  # sum over n of A * da, as a BLAS matrix-vector product (P is free now)
                    out["dt"][k].copy_((torch.mul(G, A, out=P).view(-1, n) @ ones_n).view(m, chunk, dim))
                if need_A:  # sum over (batch, time) of dt * da
                    G.mul_(blk.dt[k].unsqueeze(-1))
                    dA.addmv_(G.view(-1, dim * n).t(), ones_t[: m * chunk])
                if need_x or need_B:
                    lam_t = R.div_(E)
                    if need_x:
                        out["x"][k].copy_(blk.bmv(lam_t, blk.B[k]))
                    if need_B:
                        out["B"][k].copy_(blk.bvm(blk.x[k], lam_t, gb))
            dh0[rows] = lam
        dx, ddt, dB, dC = (None if g is None else _from_time_major(g, length) for g in grads.values())
        dA_out = dA.view(dim, n) if need_A else None
        return dx, ddt, dA_out, dB, dC, dh0 if (has_h0 and need_h0) else None, None


def _chunk_sizes(dt: Tensor, A: Tensor, chunk_size: int) -> Tensor:
    """Per channel, the largest chunk (chunk_size, halved down to 1) whose log-decay spread fits exp().

    With the reference at a chunk's midpoint, |c_t - m| <= |A| * spread(cumsum dt) / 2. Typical
    training steps fit the full chunk; channels with huge dt * |A| get shorter chunks (a chunk of one
    step is the plain recurrence and always fits), so no input can overflow the factorisation.
    """
    batch, dim, length = dt.shape
    a_max = A.detach().abs().amax(1)
    dt = dt.detach()
    sizes = torch.ones(dim, dtype=torch.long, device=dt.device)
    todo = torch.ones(dim, dtype=torch.bool, device=dt.device)
    chunk = min(chunk_size, length)
    while chunk > 1:
        cd = _in_chunk_cumsum(_time_major(dt, chunk))
        spread = (cd.amax(2) - cd.amin(2)).amax((0, 1))
        fits = todo & (0.5 * spread * a_max <= _MAX_LOG_DECAY)
        sizes[fits] = chunk
        todo &= ~fits
        if not bool(todo.any()):
            break
        chunk //= 2
    return sizes


def _channels(M: Tensor, idx: Tensor, dim: int) -> Tensor:
    """B or C (batch, groups, n, L) for a subset of channels (shared as is when there is one group)."""
    if M.shape[1] == 1:
        return M
    return M[:, idx // (dim // M.shape[1])]


def selective_scan_chunked(
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ScanResult:
    """Chunked-parallel selective scan with a hand-written backward: the fast path on CPU.

    Channels whose step sizes are too large for ``chunk_size`` (see ``_chunk_sizes``) run with
    shorter chunks in a separate call, so results stay within float rounding of the reference for
    any dt * A, including -1e4 per step.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype_in = u.dtype
    u, dt = discretisation_inputs(u, delta, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    dtype = u.dtype
    A = A.to(dtype)
    Bg, Cg = (_grouped(M, batch, length).to(dtype) for M in (B, C))
    h0 = None if initial_state is None else initial_state.to(dtype)
    x = dt * u
    sizes = _chunk_sizes(dt, A, chunk_size)
    chunks = sizes.unique().tolist()
    if len(chunks) == 1:
        y, last = _ChunkScan.apply(x, dt, A, Bg, Cg, h0, chunks[0])
    else:
        ys, lasts, order = [], [], []
        for chunk in chunks:
            idx = (sizes == chunk).nonzero().squeeze(1)
            part_h0 = None if h0 is None else h0[:, idx]
            y_i, last_i = _ChunkScan.apply(
                x[:, idx],
                dt[:, idx],
                A[idx],
                _channels(Bg, idx, dim),
                _channels(Cg, idx, dim),
                part_h0,
                chunk,
            )
            ys.append(y_i)
            lasts.append(last_i)
            order.append(idx)
        inverse = torch.argsort(torch.cat(order))
        y = torch.cat(ys, 1)[:, inverse]
        last = torch.cat(lasts, 1)[:, inverse]
    out = finish_output(y, u, D, z, dtype_in)
    return (out, last) if return_last_state else out


# --------------------------------------------------------------------------- CUDA kernel dispatch

_mamba_fn: Any = None
_mamba_error: str | None = None
_mamba_checked = False


def _mamba_selective_scan_fn() -> Any:
    """mamba-ssm's ``selective_scan_fn`` or None; imported once, lazily (it raises without CUDA)."""
    global _mamba_fn, _mamba_error, _mamba_checked
    if not _mamba_checked:
        _mamba_checked = True
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception as exc:  # noqa: BLE001 - any import failure means "no kernel"
            _mamba_error = f"{type(exc).__name__}: {exc}"
        else:
            _mamba_fn = selective_scan_fn
    return _mamba_fn


def cuda_scan_available(tensor: Tensor) -> bool:
    """Whether mamba-ssm's CUDA selective scan can run on this tensor's device."""
    return tensor.is_cuda and _mamba_selective_scan_fn() is not None


def _cuda_unsupported(u: Tensor, initial_state: Tensor | None) -> str | None:
    """Why the CUDA kernel cannot take this call, or None when it can."""
    if initial_state is not None:
        return "the mamba-ssm CUDA kernel does not support initial_state; use impl='chunked' to carry a state"
    if not u.is_cuda:
        return "impl='cuda' needs CUDA tensors"
    if u.dtype == torch.float64:
        return "the mamba-ssm CUDA kernel does not support float64"
    if _mamba_selective_scan_fn() is None:
        return f"impl='cuda' needs mamba-ssm (pip install mamba-ssm): {_mamba_error}"
    return None


def _selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> ScanResult:
    """Call the kernel with the dtypes it insists on: fp32 weights, variable B/C and z in u's dtype."""
    fp32 = torch.float32

    def bc(M: Tensor) -> Tensor:
        return M.to(fp32) if M.dim() == 2 else M.to(u.dtype)

    return _mamba_selective_scan_fn()(
        u,
        delta.to(u.dtype),
        A.to(fp32),
        bc(B),
        bc(C),
        None if D is None else D.to(fp32),
        None if z is None else z.to(u.dtype),
        None if delta_bias is None else delta_bias.to(fp32),
        delta_softplus,
        return_last_state,
    )


def selective_scan(
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
    impl: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ScanResult:
    """Selective scan through the best available implementation.

    impl: "auto" (mamba-ssm's kernel for CUDA tensors without an initial state, the native kernel
    for CPU tensors where it builds, else chunked), "ref", "chunked", "native" (CPU; chunked after
    one warning where the kernel cannot be built) or "cuda" (RuntimeError when the kernel cannot
    take the call). Returns ``out`` or ``(out, last_state)`` when ``return_last_state``.
    """
    if impl not in SCAN_IMPLS:
        raise ValueError(f"impl must be one of {SCAN_IMPLS}, got {impl!r}")
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if impl == "ref":
        return selective_scan_ref(*args, initial_state, return_last_state)
    if impl == "cuda" or (impl == "auto" and _cuda_unsupported(u, initial_state) is None):
        _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
        reason = _cuda_unsupported(u, initial_state)
        if reason is not None:
            raise RuntimeError(reason)
        return _selective_scan_cuda(*args, return_last_state)
    if impl == "native" or (impl == "auto" and u.device.type == "cpu"):
        from .native_scan import native_scan_available, selective_scan_native  # compiles on first use

        if impl == "native" or native_scan_available():
            return selective_scan_native(*args, initial_state, return_last_state)
    return selective_scan_chunked(*args, initial_state, return_last_state, chunk_size)
