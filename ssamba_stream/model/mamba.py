"""Mamba mixer, uni- and bidirectional ("bimamba v2" as in Vim), with a block-local backward option.

Parameter names follow mamba-ssm and Vim (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``,
``D``, ``out_proj``; the backward direction adds ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``,
``D_b``) so that state dicts move between them unchanged.

The backward direction of a bidirectional layer needs the future. With ``backward_block=None`` it runs
over the whole sequence (SSAMBA as published, offline only). With ``backward_block=B`` it runs inside
blocks of B tokens (plus ``lookahead`` R tokens of the next block), from zero state: the forward
direction then carries its state across blocks, and ``forward_chunk`` computes exactly what
``forward`` computes, one chunk of whole blocks at a time (design §5).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block_scan import block_scan, softplus
from .scan import selective_scan


class MixerState(NamedTuple):
    """Carried state of one mixer's forward direction.

    conv: (batch, d_inner, d_conv - 1), the last pre-convolution inputs (oldest first).
    ssm: (batch, d_inner, d_state), the selective-scan state after the last token.
    """

    conv: Tensor
    ssm: Tensor


def _inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class Mamba(nn.Module):
    """Mamba-1 mixer; ``bidirectional=True`` adds Vim's v2 backward direction (shared in/out projections).

    Output is ``out_proj((y_fwd + flip(y_bwd)) / 2)`` (Vim's ``if_divide_out``; ``divide_out=False`` sums).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        conv_bias: bool = True,
        bias: bool = False,
        bidirectional: bool = True,
        divide_out: bool = True,
        backward_block: int | None = None,
        lookahead: int = 0,
        scan_impl: str = "auto",
    ) -> None:
        super().__init__()
        if backward_block is not None and backward_block < 1:
            raise ValueError(f"backward_block must be None or >= 1, got {backward_block}")
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        if lookahead and backward_block is None:
            raise ValueError("lookahead only applies to a block-local backward: set backward_block too")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = bidirectional
        self.divide_out = divide_out
        self.backward_block = backward_block
        self.lookahead = lookahead
        self.scan_impl = scan_impl
        # Any function with selective_scan's contract; the export swaps in graph-friendly forms.
        self.scan_fn = selective_scan

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        directions = ("", "_b") if bidirectional else ("",)
        for suffix in directions:
            self._build_direction(suffix, conv_bias, dt_min, dt_max, dt_init_floor, dt_scale)

    def _build_direction(
        self, suffix: str, conv_bias: bool, dt_min: float, dt_max: float, dt_floor: float, dt_scale: float
    ) -> None:
        """Create conv1d, x_proj, dt_proj, A_log, D (with ``suffix``) and initialise them as mamba-ssm does."""
        d_inner, d_state = self.d_inner, self.d_state
        conv = nn.Conv1d(d_inner, d_inner, self.d_conv, groups=d_inner, bias=conv_bias)
        x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        with torch.no_grad():
            bound = self.dt_rank**-0.5 * dt_scale
            nn.init.uniform_(dt_proj.weight, -bound, bound)
            dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt_proj.bias.copy_(_inverse_softplus(dt.clamp(min=dt_floor)))
        dt_proj.bias._no_reinit = True
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        A_log = nn.Parameter(a_log.contiguous())
        D = nn.Parameter(torch.ones(d_inner))
        A_log._no_weight_decay = True
        D._no_weight_decay = True
        a_name = "A_log" if not suffix else "A_b_log"
        setattr(self, f"conv1d{suffix}", conv)
        setattr(self, f"x_proj{suffix}", x_proj)
        setattr(self, f"dt_proj{suffix}", dt_proj)
        setattr(self, a_name, A_log)
        setattr(self, f"D{suffix}", D)

    def _scan(
        self,
        suffix: str,
        x: Tensor,
        z: Tensor,
        conv_state: Tensor | None = None,
        ssm_state: Tensor | None = None,
        valid: Tensor | None = None,
        return_state: bool = False,
    ) -> tuple[Tensor, MixerState | None]:
        """Run one direction (suffix "" or "_b") over x, z of shape (batch, d_inner, L).

        ``conv_state`` holds the d_conv-1 inputs before x (zeros when None); ``valid`` (L,) masks
        positions that do not exist (their conv input is zero and they leave the scan state untouched).
        """
        conv: nn.Conv1d = getattr(self, f"conv1d{suffix}")
        x_proj: nn.Linear = getattr(self, f"x_proj{suffix}")
        dt_proj: nn.Linear = getattr(self, f"dt_proj{suffix}")
        A_log: Tensor = self.A_log if not suffix else self.A_b_log
        D: Tensor = getattr(self, f"D{suffix}")
        if conv_state is None:
            x_padded = F.pad(x, (self.d_conv - 1, 0))
        else:
            x_padded = torch.cat([conv_state.to(x.dtype), x], dim=-1)
        u = F.silu(F.conv1d(x_padded, conv.weight, conv.bias, groups=self.d_inner))
        if valid is not None:
            u = u * valid.to(u.dtype)
        x_dbl = x_proj(u.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # (batch, d_inner, L); bias goes to the scan
        A = -torch.exp(A_log.float())
        result = self.scan_fn(
            u,
            delta,
            A,
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            D.float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
            initial_state=ssm_state,
            return_last_state=return_state,
            impl=self.scan_impl,
        )
        if not return_state:
            return result, None
        y, last = result
        new_conv = x_padded[..., -(self.d_conv - 1) :]
        return y, MixerState(new_conv, last)

    def _backward_blocks(self, x: Tensor, z: Tensor) -> Tensor:
        """Backward direction restricted to blocks of B tokens (+ R look-ahead), each from zero state."""
        block, ahead = self.backward_block, self.lookahead
        batch, d_inner, length = x.shape
        n_blocks = (length + block - 1) // block  # not -(-a // b): ONNX integer Div truncates
        window = block + ahead
        pad = n_blocks * block + ahead - length
        if pad:
            x = F.pad(x, (0, pad))
            z = F.pad(z, (0, pad))

        # Window k holds tokens k*B .. k*B + W - 1: a reshape when windows do not overlap, else a
        # gather (not unfold, which does not export to ONNX).
        positions = torch.arange(n_blocks, device=x.device)[:, None] * block + torch.arange(window, device=x.device)

        def to_windows(t: Tensor) -> Tensor:
            w = t.view(-1, d_inner, n_blocks, block) if not ahead else t[..., positions]
            return w.permute(0, 2, 1, 3).reshape(-1, d_inner, window).flip(-1)

        valid = None
        if pad:  # positions past the end exist only as padding: keep them out of the scan
            valid = (positions < length).flip(-1).repeat(batch, 1)[:, None, :]  # (batch*n_blocks, 1, window)
        y, _ = self._scan("_b", to_windows(x), to_windows(z), valid=valid)
        # -1, not the batch size, in reshapes: a traced batch size costs shape arithmetic in the graph
        y = y.flip(-1)[..., :block].reshape(-1, n_blocks, d_inner, block)
        return y.permute(0, 2, 1, 3).reshape(-1, d_inner, n_blocks * block)[..., :length]

    def _merge_directions(self, y_fwd: Tensor, y_bwd: Tensor | None) -> Tensor:
        """Sum of the directions' outputs (halved with ``divide_out``), in whatever layout they come."""
        if y_bwd is None:
            return y_fwd
        y = y_fwd + y_bwd
        return y / 2 if self.divide_out else y

    def _combine(self, y_fwd: Tensor, y_bwd: Tensor | None) -> Tensor:
        """out_proj of the merged directions, from (batch, d_inner, L)."""
        return self.out_proj(self._merge_directions(y_fwd, y_bwd).transpose(1, 2))

    def _split(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        xz = self.in_proj(hidden).transpose(1, 2)  # (batch, 2*d_inner, L)
        return torch.split(xz, [self.d_inner, self.d_inner], dim=1)  # constant sizes: one graph node

    def forward(self, hidden: Tensor) -> Tensor:
        """Offline forward over a whole sequence: (batch, L, d_model) -> (batch, L, d_model)."""
        x, z = self._split(hidden)
        y_fwd, _ = self._scan("", x, z)
        y_bwd = None
        if self.bidirectional:
            if self.backward_block is None:
                y_bwd, _ = self._scan("_b", x.flip(-1), z.flip(-1))
                y_bwd = y_bwd.flip(-1)
            else:
                y_bwd = self._backward_blocks(x, z)
        return self._combine(y_fwd, y_bwd)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> MixerState:
        """Zero state, as at the start of a stream."""
        return MixerState(
            torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=torch.float32),
        )

    def check_streamable(self, num_tokens: int) -> None:
        """Raise ValueError unless a chunk of ``num_tokens`` tokens can be processed with carried state."""
        if not self.bidirectional:
            return
        if self.backward_block is None:
            raise ValueError(
                "a fully bidirectional layer cannot stream (its backward scan needs the whole input): "
                "build the model with backward_block=B"
            )
        if self.lookahead:
            raise ValueError(
                "streaming with look-ahead is not supported by forward_chunk: build with lookahead=0"
            )
        if num_tokens % self.backward_block:
            raise ValueError(
                f"a chunk of {num_tokens} tokens is not a whole number of blocks of {self.backward_block}: "
                "feed chunks of a multiple of backward_block tokens"
            )

    def forward_chunk(self, hidden: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:
        """Process the next chunk of a stream (whole blocks), carrying the forward direction's state.

        Feeding a sequence chunk by chunk from ``init_state`` gives the same output as ``forward``.
        """
        self.check_streamable(hidden.shape[1])
        if self.bidirectional and hidden.shape[1] == self.backward_block:
            return self._one_block_both_directions(hidden, state)
        x, z = self._split(hidden)
        y_fwd, new_state = self._scan("", x, z, state.conv, state.ssm, return_state=True)
        y_bwd = self._backward_blocks(x, z) if self.bidirectional else None
        return self._combine(y_fwd, y_bwd), new_state

    def _one_block_both_directions(self, hidden: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:
        """Both directions over exactly one block: forward from the carried state, backward from zero.

        The step graph's hot path. The directions are stacked as two groups (the backward one
        time-flipped) so every op runs once for both, and everything stays channels-last
        (batch, [group,] time, channel) from in_proj to out_proj: the conv is a gather of each
        step's d_conv taps and one multiply-sum, and the scan is ``block_scan``, so an exported
        graph has no large transposes and few nodes.
        Same result as ``_scan`` + ``_backward_blocks``.
        """
        # Sizes from attributes (not tensor shapes) keep an exported graph free of shape arithmetic.
        d, length, width = self.d_inner, self.backward_block, self.d_conv
        x, z = self.in_proj(hidden).split([d, d], dim=-1)  # (batch, L, d) each
        both_x = torch.cat([x, x.flip(1)], dim=-1)  # (batch, L, 2d): backward half time-flipped
        history = F.pad(state.conv.to(x.dtype).transpose(1, 2), (0, d))  # backward conv starts from zeros
        padded = torch.cat([history, both_x], dim=1)  # (batch, d_conv - 1 + L, 2d)
        weight = torch.cat([self.conv1d.weight, self.conv1d_b.weight])[:, 0].t()  # (d_conv, 2d)
        taps = torch.arange(length, device=x.device)[:, None] + torch.arange(width, device=x.device)
        conv = (padded[:, taps] * weight).sum(2)  # one Gather, Mul and ReduceSum in a graph
        if self.conv1d.bias is not None:
            conv = conv + torch.cat([self.conv1d.bias, self.conv1d_b.bias])
        u = F.silu(conv).view(-1, length, 2, d).transpose(1, 2)  # (batch, 2, L, d)
        x_proj = torch.stack([self.x_proj.weight, self.x_proj_b.weight]).transpose(1, 2)  # (2, d, k)
        dt, B, C = torch.split(u @ x_proj, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt_weight = torch.stack([self.dt_proj.weight, self.dt_proj_b.weight]).transpose(1, 2)  # (2, r, d)
        dt_bias = torch.stack([self.dt_proj.bias, self.dt_proj_b.bias]).unsqueeze(1)  # (2, 1, d)
        y, last = block_scan(
            u,
            softplus(dt @ dt_weight + dt_bias),
            -torch.exp(torch.stack([self.A_log, self.A_b_log]).float()).transpose(1, 2),  # (2, n, d)
            B,
            C,
            torch.stack([self.D, self.D_b]).unsqueeze(1),
            torch.cat([z, z.flip(1)], dim=-1).view(-1, length, 2, d).transpose(1, 2),
            F.pad(state.ssm.transpose(1, 2).unsqueeze(1), (0, 0, 0, 0, 0, 1)),  # (batch, 2, n, d)
        )
        y = self._merge_directions(y[:, 0], y[:, 1].flip(1))  # (batch, L, d): channels-last, no transpose
        new_conv = padded[:, -(width - 1) :, :d].transpose(1, 2)
        return self.out_proj(y.to(hidden.dtype)), MixerState(new_conv, last[:, 0].transpose(1, 2))
