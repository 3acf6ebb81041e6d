"""Selective scans in standard ops that export to ONNX and TensorRT, for the layers' generic scan.

A bidirectional layer's one-block streaming step does not use these: it runs both directions through
``ssamba_stream.model.block_scan`` (channels-last, the step graph's hot path). These forms serve the
scan calls that remain in traced graphs (unidirectional layers, multi-block chunks, offline windows),
where the training scans' chunk loops and custom autograd do not trace. Three forms, same contract
as ``ssamba_stream.model.scan.selective_scan`` (B and C variable (batch, n, L) or grouped
(batch, g, n, L)):

- ``scan_unrolled``: the recurrence written out over the L steps (many small ops; exact);
- ``scan_segsum``: the whole block at once through pairwise decays exp(cum_t - cum_s), s <= t, a
  (L x L) lower-triangular kernel per channel and state (few, larger ops; exact);
- ``scan_cumsum``: log-space cumulative sums relative to the chunk's middle step (fewest, small
  ops; the per-step decay is floored at 1e-7, a relative change of at most 1e-7 per step).

benchmarks/streaming.py measures which is faster per backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .scan import discretisation_inputs, finish_output

SEGSUM_CHUNK = 16  # steps per pairwise-decay kernel; a step graph's block (8) fits in one
CUMSUM_CHUNK = 8  # steps per log-space chunk: with the floor below, |exponents| <= 8 * 16 / 2 = 64
CUMSUM_MAX_STEP_DECAY = 16.0


def _times_groups(per_channel: Tensor, M: Tensor) -> Tensor:
    """per_channel (b, d, L, k) times B or C (variable (b, n, L) or grouped (b, g, n, L)) -> (b, d, L, n).

    Channel c uses group c // (d / g), as in mamba-ssm. Views with -1 for the batch keep an
    exported graph free of shape arithmetic.
    """
    M = M.float().unsqueeze(1) if M.dim() == 3 else M.float()
    groups, n, length = M.shape[1], M.shape[2], M.shape[3]
    channels, k = per_channel.shape[1], per_channel.shape[3]
    product = per_channel.reshape(-1, groups, channels // groups, length, k) * M.transpose(2, 3).unsqueeze(2)
    return product.reshape(-1, channels, length, n)


def _prepare(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Tensor | None, delta_softplus: bool):
    """Compute-dtype inputs, biased/softplus'd delta (as the training scans), and per-step log-decay and input terms (b, d, L, n)."""
    u, delta = discretisation_inputs(u, delta, delta_bias, delta_softplus)
    log_decay = delta.unsqueeze(-1) * A.float()[:, None, :]  # (b, d, L, n)
    drive = _times_groups((delta * u).unsqueeze(-1), B)  # (b, d, L, n)
    return u, log_decay, drive


def scan_unrolled(
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
    **_: object,
) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrence h_t = exp(dt A) h_{t-1} + dt B_t u_t written out step by step."""
    dtype = u.dtype
    u, log_decay, drive = _prepare(u, delta, A, B, delta_bias, delta_softplus)
    decay = torch.exp(log_decay)
    state = torch.zeros_like(drive[:, :, :1]) if initial_state is None else initial_state.float().unsqueeze(2)
    states = []
    # Slices keep the time axis (no Squeeze/Unsqueeze per step) and y is one product at the end:
    # four graph nodes per step.
    for t in range(u.shape[-1]):
        state = decay[:, :, t : t + 1] * state + drive[:, :, t : t + 1]
        states.append(state)
    y = _times_groups(torch.cat(states, dim=2), C).sum(-1)
    y = finish_output(y, u, D, z, dtype)
    state = state.squeeze(2)
    return (y, state) if return_last_state else y


def scan_segsum(
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
    chunk: int = SEGSUM_CHUNK,
    **_: object,
) -> Tensor | tuple[Tensor, Tensor]:
    """h_t = exp(cum_t) h_0 + sum_{s<=t} exp(cum_t - cum_s) dt_s B_s u_s, a chunk of steps at once.

    Every exponent is <= 0 (cum decreases) and masked entries are -inf before the exp, so the form
    is stable for any dt*A, unlike exp(cum_t) * cumsum(exp(-cum_s) ...). Sequences longer than
    ``chunk`` run chunk by chunk with the state carried, which bounds the (chunk x chunk) kernel.
    """
    dtype = u.dtype
    u, log_decay, drive = _prepare(u, delta, A, B, delta_bias, delta_softplus)
    state = None if initial_state is None else initial_state.float()
    outputs = []
    for start in range(0, u.shape[-1], chunk):
        end = min(start + chunk, u.shape[-1])
        cum = torch.cumsum(log_decay[:, :, start:end], dim=2)  # (b, d, T, n)
        pairwise = cum.unsqueeze(3) - cum.unsqueeze(2)  # (b, d, t, s, n)
        causal = torch.ones(end - start, end - start, dtype=torch.bool, device=u.device).tril()
        kernel = torch.exp(
            torch.where(causal[:, :, None], pairwise, torch.full_like(pairwise, float("-inf")))
        )
        states = (kernel * drive[:, :, start:end].unsqueeze(2)).sum(3)  # (b, d, t, n)
        if state is not None:
            states = states + torch.exp(cum) * state.unsqueeze(2)
        outputs.append(_times_groups(states, C[..., start:end]).sum(-1))
        state = states[:, :, -1]
    y = finish_output(torch.cat(outputs, dim=-1), u, D, z, dtype)
    return (y, state) if return_last_state else y


def scan_cumsum(
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
    chunk: int = CUMSUM_CHUNK,
    **_: object,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-space cumulative sums: h_t = exp(c_t - m) * (cumsum_s exp(m - c_s) x_s + exp(m) h_0).

    c is the in-chunk cumulative log-decay and m its value at the chunk's middle step. Each step's
    log-decay is floored at -CUMSUM_MAX_STEP_DECAY (a decay of 1e-7 per step instead of less:
    the state changes by at most 1e-7 of itself), so with chunks of CUMSUM_CHUNK steps every
    exponent stays within +-64 and fp32 cannot overflow. About a dozen graph nodes per chunk.
    """
    dtype = u.dtype
    u, log_decay, drive = _prepare(u, delta, A, B, delta_bias, delta_softplus)
    log_decay = torch.clamp(log_decay, min=-CUMSUM_MAX_STEP_DECAY)
    state = None if initial_state is None else initial_state.float().unsqueeze(2)
    outputs = []
    for start in range(0, u.shape[-1], chunk):
        end = min(start + chunk, u.shape[-1])
        cum = torch.cumsum(log_decay[:, :, start:end], dim=2)  # (b, d, T, n)
        middle = (end - start - 1) // 2
        ref = cum[:, :, middle : middle + 1]
        total = torch.cumsum(torch.exp(ref - cum) * drive[:, :, start:end], dim=2)
        if state is not None:
            total = total + torch.exp(ref) * state
        states = torch.exp(cum - ref) * total
        outputs.append(_times_groups(states, C[..., start:end]).sum(-1))
        state = states[:, :, -1:]
    y = finish_output(torch.cat(outputs, dim=-1), u, D, z, dtype)
    return (y, state.squeeze(2)) if return_last_state else y


GRAPH_SCANS = {"unrolled": scan_unrolled, "segsum": scan_segsum, "cumsum": scan_cumsum}
