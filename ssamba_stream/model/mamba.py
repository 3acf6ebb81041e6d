"""Mamba mixer, uni- and bidirectional ("bimamba v2" as in Vim), with a block-local backward option.

Parameter names follow mamba-ssm and Vim (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``,
``D``, ``out_proj``; the backward direction adds ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``,
``D_b``) so that state dicts move between them unchanged.

The backward direction of a bidirectional layer needs the future. How far it looks is the call's
``ScanMode``: with ``block=None`` it runs over the whole sequence (SSAMBA as published, offline only);
with ``block=B`` it runs inside blocks of B tokens (plus ``lookahead`` R tokens of the next block),
from zero state: the forward direction then carries its state across blocks, and ``forward_chunk``
computes exactly what ``forward`` computes, one chunk of whole blocks at a time (design §5). The
mixer declares the state it carries (``state_shapes``), so a step graph needs no knowledge of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block_scan import BlockScan
from .frontend import capturing_graph
from .native_conv import conv_silu_native
from .native_scan import native_kernels_built, selective_scan_native
from .scan_mode import OFFLINE, ScanMode

# Offline CPU inference runs long inputs through a layer this many tokens at a time
# (Mamba._forward_in_time_chunks), with the scans that carry a state from one call to the next.
TIME_CHUNK = 512
STATEFUL_CPU_SCANS = ("auto", "native", "chunked", "ref")


class MixerState(NamedTuple):
    """Carried state of one mixer's forward direction.

    conv: (batch, d_inner, d_conv - 1), the last pre-convolution inputs (oldest first).
    ssm: (batch, d_inner, d_state), the selective-scan state after the last token.
    """

    conv: Tensor
    ssm: Tensor


# The step graph's names of MixerState's fields, in order.
MIXER_STATE_NAMES = ("conv_state", "ssm_state")


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
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = bidirectional
        self.divide_out = divide_out

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        directions = ("", "_b") if bidirectional else ("",)
        for suffix in directions:
            self._build_direction(suffix, conv_bias, dt_min, dt_max, dt_init_floor, dt_scale)
        self.block_scan = BlockScan()  # no weights: one ONNX function per layer in an exported step

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
        mode: ScanMode,
        conv_state: Tensor | None = None,
        ssm_state: Tensor | None = None,
        valid: Tensor | None = None,
        return_state: bool = False,
        reverse: bool = False,
    ) -> tuple[Tensor, MixerState | None]:
        """Run one direction (suffix "" or "_b") over x, z of shape (batch, d_inner, L).

        ``reverse``: over x backward in time, as if x and z were flipped before and y after (the
        native kernels do it in place). ``conv_state`` holds the d_conv-1 inputs before x in that
        scan order (zeros when None); ``valid`` (L,) masks positions that do not exist (their conv
        input is zero and they leave the scan state untouched).
        """
        if valid is None and self._native_kernels(x, mode):
            blocks = x.shape[-1] if reverse else None
            return self._scan_native(suffix, x, z, conv_state, ssm_state, return_state, blocks)
        if reverse:
            y, state = self._scan(
                suffix, x.flip(-1), z.flip(-1), mode, conv_state, ssm_state, valid, return_state
            )
            return y.flip(-1), state
        conv: nn.Conv1d = getattr(self, f"conv1d{suffix}")
        if conv_state is None:
            x_padded = F.pad(x, (self.d_conv - 1, 0))
        else:
            x_padded = torch.cat([conv_state.to(x.dtype), x], dim=-1)
        u = F.silu(F.conv1d(x_padded, conv.weight, conv.bias, groups=self.d_inner))
        if valid is not None:
            u = u * valid.to(u.dtype)
        result = self._selective_scan(suffix, u, z, mode.scan_fn, ssm_state, return_state)
        if not return_state:
            return result, None
        y, last = result
        return y, MixerState(x_padded[..., -(self.d_conv - 1) :], last)

    def _scan_native(
        self,
        suffix: str,
        x: Tensor,
        z: Tensor,
        conv_state: Tensor | None,
        ssm_state: Tensor | None,
        return_state: bool,
        reversed_blocks: int | None,
    ) -> tuple[Tensor, MixerState | None]:
        """``_scan`` through the native kernels, in time order: forward, or each block of
        ``reversed_blocks`` tokens backward in place (one block over x: ``reverse``)."""
        conv: nn.Conv1d = getattr(self, f"conv1d{suffix}")
        u = conv_silu_native(x, conv.weight, conv.bias, reversed_blocks, conv_state)
        scan = partial(selective_scan_native, reversed_blocks=reversed_blocks)
        result = self._selective_scan(suffix, u, z, scan, ssm_state, return_state)
        if not return_state:
            return result, None
        y, last = result
        return y, MixerState(self._conv_tail(x, conv_state, reversed_blocks is not None), last)

    def _conv_tail(self, x: Tensor, conv_state: Tensor | None, backward: bool) -> Tensor:
        """The conv state after x: its last d_conv - 1 inputs in scan order, oldest first."""
        width = self.d_conv - 1
        recent = x[..., :width].flip(-1) if backward else x[..., -width:]
        before = x.new_zeros(*x.shape[:2], width) if conv_state is None else conv_state.to(x.dtype)
        return torch.cat([before, recent], dim=-1)[..., -width:]

    def _selective_scan(
        self,
        suffix: str,
        u: Tensor,
        z: Tensor,
        scan_fn: Callable[..., Any],
        ssm_state: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """The direction's projections of the conv output u (batch, d_inner, L) and its selective
        scan (``scan_fn``, selective_scan's contract): y, or (y, last state) with ``return_state``."""
        x_proj: nn.Linear = getattr(self, f"x_proj{suffix}")
        dt_proj: nn.Linear = getattr(self, f"dt_proj{suffix}")
        A_log: Tensor = self.A_log if not suffix else self.A_b_log
        D: Tensor = getattr(self, f"D{suffix}")
        x_dbl = x_proj(u.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # delta stays a channels-last view (the projection writes (batch, L, d_inner) twice as fast
        # as (batch, d_inner, L)); the bias goes to the scan
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)
        A = -torch.exp(A_log.float())
        return scan_fn(
            u,
            delta,
            A,
            B.transpose(1, 2),  # views: each implementation lays B and C out as it needs them
            C.transpose(1, 2),
            D.float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
            initial_state=ssm_state,
            return_last_state=return_state,
        )

    def _backward_blocks(self, x: Tensor, z: Tensor, mode: ScanMode) -> Tensor:
        """Backward direction restricted to blocks of B tokens (+ R look-ahead), each from zero state."""
        if self._blocks_in_time_order(x, mode):
            return self._backward_blocks_in_time_order(x, z, mode.block)
        block, ahead = mode.block, mode.lookahead
        batch, d_inner, length = x.shape
        n_blocks = (length + block - 1) // block  # not -(-a // b): ONNX integer Div truncates
        window = block + ahead
        pad = n_blocks * block + ahead - length
        if pad:
            x = F.pad(x, (0, pad))
            z = F.pad(z, (0, pad))

        # Window k holds tokens k*B .. k*B + W - 1: a reshape when windows do not overlap, else a
        # gather (not unfold, which does not export to ONNX).
        positions = torch.arange(n_blocks, device=x.device)[:, None] * block + torch.arange(
            window, device=x.device
        )

        def to_windows(t: Tensor) -> Tensor:
            w = t.view(-1, d_inner, n_blocks, block) if not ahead else t[..., positions]
            return w.permute(0, 2, 1, 3).reshape(-1, d_inner, window).flip(-1)

        valid = None
        if pad:  # positions past the end exist only as padding: keep them out of the scan
            valid = (positions < length).flip(-1).repeat(batch, 1)[:, None, :]  # (batch*n_blocks, 1, window)
        y, _ = self._scan("_b", to_windows(x), to_windows(z), mode, valid=valid)
        # -1, not the batch size, in reshapes: a traced batch size costs shape arithmetic in the graph
        y = y.flip(-1)[..., :block].reshape(-1, n_blocks, d_inner, block)
        return y.permute(0, 2, 1, 3).reshape(-1, d_inner, n_blocks * block)[..., :length]

    @staticmethod
    def _native_kernels(x: Tensor, mode: ScanMode) -> bool:
        """Whether the conv and SiLU run in the native kernel too: with the native scan form (the
        default on CPU), eager, where the kernels are built. The other forms stay pure torch."""
        return (
            mode.scan in ("auto", "native")
            and x.device.type == "cpu"
            and not capturing_graph()
            and native_kernels_built()
        )

    @classmethod
    def _blocks_in_time_order(cls, x: Tensor, mode: ScanMode) -> bool:
        """Whether the native kernels run the backward blocks where they lie (no look-ahead)."""
        return mode.lookahead == 0 and cls._native_kernels(x, mode)

    def _backward_blocks_in_time_order(self, x: Tensor, z: Tensor, block: int) -> Tensor:
        """``_backward_blocks`` without cutting windows out: the conv looks ahead inside each block
        and the native scan runs each block backward in place, so a training step's backward
        direction works on whole rows instead of (batch * blocks) rows of ``block`` tokens."""
        return self._scan_native("_b", x, z, None, None, False, block)[0]

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

    def forward(self, hidden: Tensor, mode: ScanMode = OFFLINE, reversed_time: bool = False) -> Tensor:
        """Forward over a whole sequence: (batch, L, d_model) -> (batch, L, d_model).

        ``reversed_time``: ``forward(hidden.flip(1)).flip(1)`` without the flips, for SSAMBA's layer
        pairs (the second runs on the time-reversed input): reversing time swaps which parameters
        scan forward and which backward, so only an offline bidirectional layer can do it this way.
        """
        if reversed_time and (not self.bidirectional or mode.block is not None):
            raise ValueError(
                "reversed_time needs a bidirectional layer with a whole-input backward (block None)"
            )
        directions = ("_b", "") if reversed_time else ("", "_b")
        if self._runs_in_time_chunks(hidden, mode):
            return self._forward_in_time_chunks(hidden, mode, *directions)
        forward_params, backward_params = directions
        x, z = self._split(hidden)
        y_fwd, _ = self._scan(forward_params, x, z, mode)
        y_bwd = None
        if self.bidirectional:
            if mode.block is None:
                y_bwd, _ = self._scan(backward_params, x, z, mode, reverse=True)
            else:
                y_bwd = self._backward_blocks(x, z, mode)
        return self._combine(y_fwd, y_bwd)

    def _runs_in_time_chunks(self, hidden: Tensor, mode: ScanMode) -> bool:
        """Offline CPU inference longer than two chunks, with a scan that takes an initial state."""
        return (
            mode.block is None
            and mode.scan in STATEFUL_CPU_SCANS
            and not torch.is_grad_enabled()
            and hidden.device.type == "cpu"
            and hidden.shape[1] > 2 * TIME_CHUNK
            and not torch.jit.is_tracing()
        )

    def _forward_in_time_chunks(
        self, hidden: Tensor, mode: ScanMode, forward_params: str, backward_params: str
    ) -> Tensor:
        """``forward`` over TIME_CHUNK tokens at a time: the same result, with the layer's temporaries
        (conv output, step sizes, flips, scan outputs) sized to a chunk instead of the input.

        The forward direction carries its conv and scan state from chunk to chunk; the backward one
        runs the chunks from the end, each backward in time (``reverse``), carrying its state the
        other way (its conv history is then the start of the chunk after). At 8192 tokens that
        leaves the in_proj output and one (batch, L, d_inner) sum as the only full-length tensors.
        """
        x, z = self._split(hidden)
        length = x.shape[-1]
        starts = range(0, length, TIME_CHUNK)
        merged = x.new_empty(x.shape[0], length, self.d_inner)  # channels-last: out_proj reads it as is
        state: MixerState | None = None
        for start in starts:
            part = slice(start, start + TIME_CHUNK)
            carried = (None, None) if state is None else state
            y, state = self._scan(
                forward_params, x[..., part], z[..., part], mode, *carried, return_state=True
            )
            merged[:, part] = y.transpose(1, 2)
        if self.bidirectional:
            state = None
            for start in reversed(starts):
                part = slice(start, start + TIME_CHUNK)
                carried = (None, None) if state is None else state
                y, state = self._scan(
                    backward_params,
                    x[..., part],
                    z[..., part],
                    mode,
                    *carried,
                    return_state=True,
                    reverse=True,
                )
                merged[:, part] = self._merge_directions(merged[:, part], y.transpose(1, 2))
        return self.out_proj(merged)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The state a stream carries, per batch row, by step-graph name (``MixerState``'s field order)."""
        return dict(
            zip(
                MIXER_STATE_NAMES,
                ((self.d_inner, self.d_conv - 1), (self.d_inner, self.d_state)),
                strict=True,
            )
        )

    def init_state(self, batch: int, device: torch.device | None = None) -> MixerState:
        """Zero state, as at the start of a stream."""
        return MixerState(
            *(torch.zeros(batch, *shape, device=device) for shape in self.state_shapes().values())
        )

    def check_streamable(self, num_tokens: int, mode: ScanMode) -> None:
        """Raise ValueError unless a chunk of ``num_tokens`` tokens can be processed with carried state."""
        if not self.bidirectional:
            return
        if mode.block is None:
            raise ValueError(
                "a fully bidirectional layer cannot stream (its backward scan needs the whole input): "
                "give a backward block (ScanMode(block=B))"
            )
        if mode.lookahead:
            raise ValueError("streaming with look-ahead is not supported by forward_chunk: use lookahead=0")
        if num_tokens % mode.block:
            raise ValueError(
                f"a chunk of {num_tokens} tokens is not a whole number of blocks of {mode.block}: "
                "feed chunks of a multiple of the backward block"
            )

    def forward_chunk(
        self, hidden: Tensor, state: Sequence[Tensor], mode: ScanMode
    ) -> tuple[Tensor, MixerState]:
        """Process the next chunk of a stream (whole blocks), carrying the forward direction's state.

        ``state`` holds the tensors of ``state_shapes`` in order. Feeding a sequence chunk by chunk
        from ``init_state`` gives the same output as ``forward`` with the same mode.
        """
        self.check_streamable(hidden.shape[1], mode)
        state = MixerState(*state)
        if self.bidirectional and hidden.shape[1] == mode.block:
            return self._one_block_both_directions(hidden, state, mode.block)
        x, z = self._split(hidden)
        y_fwd, new_state = self._scan("", x, z, mode, state.conv, state.ssm, return_state=True)
        y_bwd = self._backward_blocks(x, z, mode) if self.bidirectional else None
        return self._combine(y_fwd, y_bwd), new_state

    def _one_block_both_directions(
        self, hidden: Tensor, state: MixerState, length: int
    ) -> tuple[Tensor, MixerState]:
        """Both directions over exactly one block: forward from the carried state, backward from zero.

        The step graph's hot path. The directions are stacked as two groups (the backward one
        time-flipped) so every op runs once for both, and everything stays channels-last
        (batch, [group,] time, channel) from in_proj to out_proj: the conv is a gather of each
        step's d_conv taps and one multiply-sum, and the scan is ``block_scan``, so an exported
        graph has no large transposes and few nodes.
        Same result as ``_scan`` + ``_backward_blocks``.
        """
        # Sizes from attributes and arguments (not tensor shapes) keep an exported graph free of shape arithmetic.
        d, width = self.d_inner, self.d_conv
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
        y, last = self.block_scan(
            u,
            dt @ dt_weight + dt_bias,  # softplus'd inside
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
