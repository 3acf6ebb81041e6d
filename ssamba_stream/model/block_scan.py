"""The selective scan of one streaming block, both directions at once, in a channels-last layout.

A streaming step scans B tokens (8 by default) per layer: the forward direction from the carried
state and the time-flipped backward direction from zero, stacked as two groups. Written out step by
step in plain tensor ops, it traces to a small ONNX/TensorRT graph and runs eagerly in torch.

Layout: (batch, group, time, [state,] channel), channels innermost. Every large broadcast then
multiplies contiguous rows of channels (onnxruntime's CPU kernels run such broadcasts several times
faster than the 1-element spans of a (channel, time, state) layout), the per-step slices are
contiguous, and each step's sum over states is one batched MatMul. The mixer produces its inputs
in this layout (delta, B and C straight from MatMuls; u and z by small (B x 2d) transposes), so the
graph moves no state-sized tensor between layouts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def softplus(x: Tensor) -> Tensor:
    """softplus(x) = max(x, log(1 + exp(min(x, 20)))), in ops onnxruntime vectorises.

    Its Softplus kernel is about 10x slower per element than Exp and Log at this model's sizes.
    Above 20 softplus(x) and x agree to fp32 precision. Below, rounding 1 + exp(x) in fp32 costs
    at most half an ulp of 1 (6e-8) in absolute terms: a step size off by 6e-8 at most.
    """
    return torch.maximum(x, torch.log(1 + torch.exp(torch.clamp(x, max=20.0))))


def block_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor, initial_state: Tensor
) -> tuple[Tensor, Tensor]:
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = (C_t . h_t + D u_t) * silu(z_t).

    u, delta (already biased and softplus'd), z: (b, g, L, d); A: (g, n, d); B, C: (b, g, L, n);
    D: (g, 1, d); initial_state: (b, g, n, d). Returns y (b, g, L, d) and the last state (b, g, n, d).

    Each step makes its own decay and input term from the step's small slices and reads its output
    off the state at once, so no (b, g, L, n, d) tensor is ever made: at many streams per call
    those no longer fit the caches, and splitting and concatenating them cost a fifth of the graph.
    """
    u, delta = u.float(), delta.float()
    A = A.float()
    steps = zip(
        delta.split(1, dim=2),  # (b, g, 1, d) each
        (delta * u).split(1, dim=2),
        B.float().transpose(2, 3).split(1, dim=3),  # (b, g, n, 1)
        C.float().split(1, dim=2),  # (b, g, 1, n)
        strict=True,
    )
    state = initial_state.float()
    outputs = []
    for delta_t, input_t, B_t, C_t in steps:
        state = torch.exp(delta_t * A) * state + input_t * B_t
        outputs.append(C_t @ state)
    y = torch.cat(outputs, dim=2)  # (b, g, L, d)
    y = (y + u * D.float()) * F.silu(z.float())
    return y, state


class BlockScan(nn.Module):
    """softplus, then ``block_scan``, as a module, so that an ONNX export keeps each call as one
    local function (``BlockScan``; its formal inputs are named after ``forward``'s arguments, which
    ssamba_stream/runtime/native_backend.py's ``SCAN_ROLES`` repeats). onnxruntime runs it as it
    runs any graph; the serving runtime's ``onnxruntime-native`` backend runs each call in a
    compiled kernel instead (ssamba_stream/runtime/host_scan.py). The softplus is inside because
    onnxruntime's Log is slow: the kernel does it for free beside the scan's own exp."""

    def forward(
        self,
        u: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor,
        z: Tensor,
        initial_state: Tensor,
    ) -> tuple[Tensor, Tensor]:
        return block_scan(u, softplus(dt), A, B, C, D, z, initial_state)
