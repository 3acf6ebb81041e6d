"""SSAMBA: spectrogram tokens -> Vim blocks of bidirectional Mamba -> heads.

The tokens, position, pooling and heads are ``base.SpectrogramModel``'s; this module adds the Mamba
block stack (Vim's Add -> Norm -> Mixer blocks, optionally paired as the official recipes pair
them) and streaming: with a block-local backward scan (``ScanMode.block``), frame-token models
encode a stream chunk by chunk with carried per-layer state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import DropPath, ModelConfig, SpectrogramModel, TokenEmbedding
from .mamba import Mamba, MixerState
from .scan_mode import ScanMode

NORM_KINDS = ("layernorm", "rmsnorm")


@dataclass
class SSAMBAConfig(ModelConfig):
    """SSAMBA: the shared fields plus the Mamba mixers and their layout."""

    ARCH: ClassVar[str] = "ssamba"

    arch: str = "ssamba"
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    norm: str = "layernorm"
    bidirectional: bool = True  # Vim "bimamba v2" mixers; False = unidirectional Mamba
    pair_layers: bool = False  # official `if_bidirectional`: layer 2i on x, 2i+1 on flip(x), summed
    # The backward scan the model is trained and deployed with (its default ScanMode): None = full
    # backward (offline); B = block-local (streams). A forward call may ask for another.
    backward_block: int | None = None
    lookahead: int = 0
    final_norm_twice: bool = False  # SSAMBA's ft_avgtok applies norm_f again before the head

    def _checks(self) -> list[tuple[bool, str]]:
        return super()._checks() + [
            (self.norm in NORM_KINDS, f"norm must be one of {NORM_KINDS}, got {self.norm!r}"),
            (not self.pair_layers or self.depth % 2 == 0, "pair_layers needs an even depth"),
            (
                self.backward_block is None or self.backward_block >= 1,
                f"backward_block must be None or a positive number of tokens, got {self.backward_block}",
            ),
            (self.lookahead >= 0, f"lookahead must be >= 0, got {self.lookahead}"),
            (
                not self.lookahead or self.backward_block is not None,
                "lookahead only applies to a block-local backward: set backward_block too",
            ),
        ]


class Block(nn.Module):
    """Vim block: Add -> Norm -> Mixer, returning (hidden, residual) for the next block to add."""

    def __init__(self, config: SSAMBAConfig, drop_path: float) -> None:
        super().__init__()
        dim = config.embed_dim
        self.mixer = Mamba(
            dim,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            bidirectional=config.bidirectional,
        )
        self.norm = _make_norm(config)
        self.drop_path = DropPath(drop_path)

    def _add_norm(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        return self.norm(residual), residual

    def forward(
        self, hidden: Tensor, residual: Tensor | None, mode: ScanMode, reversed_time: bool = False
    ) -> tuple[Tensor, Tensor]:
        normed, residual = self._add_norm(hidden, residual)
        return self.mixer(normed, mode, reversed_time), residual

    def forward_chunk(
        self, hidden: Tensor, residual: Tensor | None, state: MixerState, mode: ScanMode
    ) -> tuple[Tensor, Tensor, MixerState]:
        normed, residual = self._add_norm(hidden, residual)
        out, state = self.mixer.forward_chunk(normed, state, mode)
        return out, residual, state


def _make_norm(config: SSAMBAConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.embed_dim, eps=config.norm_eps)
    return nn.LayerNorm(config.embed_dim, eps=config.norm_eps)


class Encoder(TokenEmbedding):
    """SSAMBA's encoder: the token embedding and the Vim block stack."""

    def __init__(self, config: SSAMBAConfig) -> None:
        super().__init__(config)
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.layers = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm_f = _make_norm(config)
        self.drop_path = DropPath(config.drop_path)


class SSAMBA(SpectrogramModel):
    """SSAMBA: bidirectional-Mamba (Vim) blocks; frame-token configs also stream chunk by chunk."""

    config: SSAMBAConfig
    _OWN_INIT = ("dt_proj", "dt_proj_b")  # mamba-ssm's dt initialisation

    def _build_encoder(self, config: SSAMBAConfig) -> Encoder:
        return Encoder(config)

    def _init_encoder(self) -> None:
        """Vim/mamba-ssm: out_proj rescaled by 1/sqrt(depth) for the pre-norm residual stream."""
        for name, param in self.named_parameters():
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
                with torch.no_grad():
                    param /= math.sqrt(self.config.depth)

    # ------------------------------------------------------------------ encoder
    def scan_mode(self, block: int | None | str = "config", scan: str = "auto") -> ScanMode:
        """A ScanMode at ``block`` tokens (None: full backward; "config": the trained block). A block-local
        backward keeps the configured look-ahead, as every caller that picks a block size expects."""
        block = self.config.backward_block if block == "config" else block
        return ScanMode(block, 0 if block is None else self.config.lookahead, scan)

    def _run_layers(self, hidden: Tensor, mode: ScanMode | None = None) -> Tensor:
        mode = self.scan_mode() if mode is None else mode
        residual = None
        layers = self.v.layers
        if not self.config.pair_layers:
            for layer in layers:
                hidden, residual = layer(hidden, residual, mode)
        else:
            # The second of a pair runs on the time-reversed input; a bidirectional layer over the
            # whole input does that without flipping (Mamba.forward's reversed_time).
            unflipped = self.config.bidirectional and mode.block is None
            for i in range(0, len(layers), 2):
                h_f, r_f = layers[i](hidden, residual, mode)
                if unflipped:
                    h_b, r_b = layers[i + 1](hidden, residual, mode, reversed_time=True)
                else:
                    flipped = None if residual is None else residual.flip(1)
                    h_b, r_b = layers[i + 1](hidden.flip(1), flipped, mode)
                    h_b, r_b = h_b.flip(1), r_b.flip(1)
                hidden, residual = h_f + h_b, r_f + r_b
        return self._final_norm(hidden, residual)

    def _final_norm(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.v.norm_f(residual + self.v.drop_path(hidden))

    def pool(self, hidden: Tensor) -> Tensor:
        pooled = super().pool(hidden)
        if self.config.final_norm_twice and self.config.head == "avgtok":  # SSAMBA's ft_avgtok
            return self.v.norm_f(pooled)
        return pooled

    # ------------------------------------------------------------------ streaming
    def check_streamable(self) -> None:
        cfg = self.config
        if cfg.tokens != "frame" or cfg.pos_embed or cfg.cls_token or cfg.pair_layers:
            raise ValueError(
                "only frame-token models without position embedding, cls token or layer pairing can "
                "stream: use a streaming config such as 'ssamba-kws'"
            )
        if cfg.tshape != cfg.tstride:
            raise ValueError("streaming needs non-overlapping frame tokens (tshape == tstride)")

    def stream_state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each layer's carried state per batch row, by step-graph name, as its mixer declares it."""
        shapes = [layer.mixer.state_shapes() for layer in self.v.layers]
        if any(other != shapes[0] for other in shapes):
            raise ValueError("the layers carry states of different shapes: a step graph stacks them by layer")
        return shapes[0]

    def init_stream_state(self, batch: int, device: torch.device | None = None) -> list[MixerState]:
        """Per-layer forward-direction states at the start of a stream."""
        self.check_streamable()
        return [layer.mixer.init_state(batch, device) for layer in self.v.layers]

    def forward_chunk(
        self, fbank: Tensor, states: list[MixerState], mode: ScanMode | None = None
    ) -> tuple[Tensor, list[MixerState]]:
        """Encode the next frames of a stream (whole blocks of tokens) with carried per-layer state.

        Returns the final-norm token features (batch, tokens, D) and the new states. Chunk by chunk
        from ``init_stream_state`` this equals ``forward_features`` on the whole stream, with the
        same mode (default: the configured backward block).
        """
        self.check_streamable()
        mode = self.scan_mode() if mode is None else mode
        if len(states) != len(self.v.layers):
            raise ValueError(
                f"got {len(states)} layer states for a {len(self.v.layers)}-layer model: use init_stream_state"
            )
        hidden = self.tokenize(fbank)
        residual = None
        new_states = []
        for layer, state in zip(self.v.layers, states, strict=True):
            hidden, residual, state = layer.forward_chunk(hidden, residual, state, mode)
            new_states.append(state)
        return self._final_norm(hidden, residual), new_states
