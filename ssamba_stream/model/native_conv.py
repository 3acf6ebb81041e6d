"""A Mamba layer's depthwise conv and SiLU through the native CPU kernel (csrc/conv_silu.cpp).

Channels-last in and out: the conv input is a (batch, d, L) view of the in_proj output's
(batch, L, 2d) rows, and the result is a (batch, d, L) view of a (batch, L, d) tensor, the layout
x_proj multiplies and the native scan reads without copies. Against ``F.conv1d`` + ``F.silu`` on
those views (mkldnn's depthwise conv, padding copies, a transposing copy for x_proj), it saves
most of the conv's share of a CPU training step. Built with the native scan; the mixer calls it
only where ``native_scan.native_kernels_built()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .native_scan import kernels

__all__ = ["conv_silu_native"]


class _ConvSilu(torch.autograd.Function):
    """x (batch, L, d) with contiguous channels, weight (K, d), bias (d) or None, history
    (batch, K - 1, d) or None -> (batch, L, d)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, history: Tensor | None, block: int
    ) -> Tensor:
        ctx.save_for_backward(x, weight, bias, history)
        ctx.block = block
        return kernels().conv_silu_forward(x, weight, bias, block, history)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor):  # type: ignore[override]
        x, weight, bias, history = ctx.saved_tensors
        grads = kernels().conv_silu_backward(x, weight, bias, ctx.block, history, grad_out.contiguous())
        dx, dhistory, dw, dbias = grads
        return (
            dx,
            dw.sum(0),
            None if bias is None else dbias.sum(0),
            None if history is None else dhistory,
            None,
        )


def conv_silu_native(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    reversed_blocks: int | None = None,
    history: Tensor | None = None,
) -> Tensor:
    """silu(depthwise conv1d) of x (batch, d, L) with a Conv1d's weight (d, 1, K) and bias (d).

    Without ``reversed_blocks``: the causal conv, ``F.conv1d`` of x left-padded with K - 1 zeros,
    or with ``history`` (batch, d, K - 1), the inputs before x (a Mamba layer's carried conv state).
    With ``reversed_blocks=B``: the conv of each time-flipped block of B tokens, in time order
    (token t sees tokens t .. t + K - 1 of its own block), the input of a streaming layer's
    block-local backward scan run in place (``selective_scan_native(reversed_blocks=B)``); with
    B >= L, x backward in time as one block, and ``history`` holds the K - 1 inputs after x in that
    order (the flipped input's conv state).
    """
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    rows = x.transpose(1, 2).to(dtype)  # (batch, L, d)
    if rows.stride(2) != 1:
        rows = rows.contiguous()
    taps = weight[:, 0, :].t().to(dtype).contiguous()  # (K, d)
    bias = None if bias is None else bias.to(dtype).contiguous()
    if history is not None:
        history = history.transpose(1, 2).to(dtype).contiguous()  # (batch, K - 1, d)
    out = _ConvSilu.apply(rows, taps, bias, history, reversed_blocks or 0)
    return out.to(x.dtype).transpose(1, 2)
