"""The streaming step (PCM chunk + state -> posteriors + state) and its offline reference.

A stream is defined as the audio with ``PRIMING_SAMPLES`` zeros before it (the frontend's carried
window overlap starts as zeros), cut into blocks of B tokens = B * 320 samples. For every completed
block the head pools the encoder features of the last W tokens (fewer at the start; the mean, or
learned attention weights) and classifies them. ``StreamStep`` computes one block from carried
state, in ops that export to ONNX and TensorRT; ``offline_stream_logits`` computes every block at
once from the whole recording. They are equal: that equality is the project's central test.

State of one step (all explicit, batch-first except the per-layer stacks):

==============  ==================================  ==============================================
name            shape                               meaning
==============  ==================================  ==============================================
leftover        (batch, 240)                        last window-minus-hop samples seen (frontend)
conv_state      (depth, batch, d_inner, d_conv-1)   each layer's forward-conv inputs (oldest first)
ssm_state       (depth, batch, d_inner, d_state)    each layer's forward selective-scan state
head_window     (batch, W, embed)                   features of the last W tokens (zeros before start)
head_count      (batch, 1)                          tokens in the window so far, at most W
==============  ==================================  ==============================================
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frontend import fbank_step, frame_geometry
from .mamba import MixerState
from .ssamba import SSAMBA

STATE_NAMES = ("leftover", "conv_state", "ssm_state", "head_window", "head_count")
ACTIVATIONS = ("softmax", "sigmoid")


def with_block(model: SSAMBA, block: int | None) -> SSAMBA:
    """The same weights with another backward block size (a dynamic-chunk model serves several)."""
    if block is None or block == model.config.backward_block:
        return model
    if block < 1:
        raise ValueError(f"block must be a positive number of tokens, got {block}")
    rebuilt = SSAMBA(dataclasses.replace(model.config, backward_block=block))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.train(model.training)


def set_backward_block(model: SSAMBA, block: int | None) -> None:
    """Change the backward block size in place (dynamic-chunk training draws one per batch)."""
    if block is not None and block < 1:
        raise ValueError(f"block must be a positive number of tokens or None, got {block}")
    model.config = dataclasses.replace(model.config, backward_block=block)
    for layer in model.v.layers:
        layer.mixer.backward_block = block


def priming_samples(model: SSAMBA) -> int:
    window, hop = frame_geometry(model.config.sample_rate)
    return window - hop


def block_samples(model: SSAMBA, block: int | None = None) -> int:
    """PCM samples per step: B tokens (``block``, default the model's) of ``tstride`` frames of one hop each."""
    cfg = model.config
    return (block or cfg.backward_block) * cfg.tstride * frame_geometry(cfg.sample_rate)[1]


def _activate(logits: Tensor, activation: str) -> Tensor:
    return torch.softmax(logits, dim=-1) if activation == "softmax" else torch.sigmoid(logits)


class StreamStep(nn.Module):
    """One block of a stream: (pcm, *state) -> (posteriors, logits, features, *new_state)."""

    def __init__(self, model: SSAMBA, activation: str = "softmax") -> None:
        super().__init__()
        model.check_streamable()
        if model.config.backward_block is None:
            raise ValueError("the model has a full backward scan and cannot stream: train it with backward_block=B")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.model = model.eval()
        self.frontend = model.make_frontend()
        self.activation = activation
        self.window = model.config.head_window
        self.chunk_samples = block_samples(model)

    def initial_state(self, batch: int) -> dict[str, Tensor]:
        """Zero state at the start of a stream, keyed by ``STATE_NAMES``."""
        cfg = self.model.config
        mixer_states = self.model.init_stream_state(batch)
        return {
            "leftover": torch.zeros(batch, self.frontend.window_length - self.frontend.hop_length),
            "conv_state": torch.stack([s.conv for s in mixer_states]),
            "ssm_state": torch.stack([s.ssm for s in mixer_states]),
            "head_window": torch.zeros(batch, self.window, cfg.embed_dim),
            "head_count": torch.zeros(batch, 1),
        }

    def forward(
        self, pcm: Tensor, leftover: Tensor, conv_state: Tensor, ssm_state: Tensor, head_window: Tensor,
        head_count: Tensor,
    ) -> tuple[Tensor, ...]:
        frames, leftover = fbank_step(self.frontend, pcm, leftover)
        states = [MixerState(c, s) for c, s in zip(conv_state.unbind(0), ssm_state.unbind(0), strict=True)]
        features, states = self.model.forward_chunk(frames, states)
        head_window = torch.cat([head_window, features], dim=1)[:, -self.window :]
        head_count = torch.clamp(head_count + features.shape[1], max=float(self.window))
        real = torch.arange(self.window, device=pcm.device)[None, :] >= self.window - head_count
        logits = self.model.classify(self.model.pool_window(head_window, real))
        return (
            _activate(logits, self.activation), logits, features, leftover,
            torch.stack([s.conv for s in states]), torch.stack([s.ssm for s in states]), head_window, head_count,
        )


def stream_frames(
    model: SSAMBA, audio: Tensor, frontend: nn.Module | None = None, block: int | None = None
) -> Tensor:
    """Fbank frames of every completed block of ``audio`` (batch, samples), as the stream sees them.

    The audio is primed with the zeros the streaming frontend starts from, and frames past the
    last whole block (``block`` tokens, default the model's) are dropped: frame rows line up
    with the step graph's tokens.
    """
    block = block or model.config.backward_block
    frontend = model.make_frontend().to(audio.device) if frontend is None else frontend
    blocks = audio.shape[-1] // block_samples(model, block)
    padded = F.pad(audio, (priming_samples(model), 0))
    return frontend(padded)[:, : blocks * block * model.config.tstride].to(audio.dtype)


def head_inputs(model: SSAMBA, features: Tensor, block: int) -> Tensor:
    """The head's input at every block end: the model's pooling of the last ``head_window`` tokens
    (fewer at the start), as the step graph computes it. features (batch, tokens, D) ->
    (batch, tokens // block, D). Differentiable: continuous training uses it too."""
    window = model.config.head_window
    if model.config.head_pool == "mean":
        return _mean_windows(features, block, window)
    blocks = features.shape[1] // block
    positions = (torch.arange(1, blocks + 1, device=features.device) * block)[:, None] - window
    positions = positions + torch.arange(window, device=features.device)[None, :]  # (blocks, W)
    windows = features[:, positions.clamp(min=0)]  # (batch, blocks, W, D)
    return model.pool_window(windows, positions >= 0)


def _mean_windows(features: Tensor, block: int, window: int) -> Tensor:
    """Mean of the last ``window`` tokens (fewer at the start) at every block end: the mean head's
    input, through a float64 cumulative sum so that long streams keep their precision."""
    blocks = features.shape[1] // block
    ends = torch.arange(1, blocks + 1, device=features.device) * block
    starts = torch.clamp(ends - window, min=0)
    cumulative = F.pad(features.double().cumsum(dim=1), (0, 0, 1, 0))
    pooled = (cumulative[:, ends] - cumulative[:, starts]) / (ends - starts)[None, :, None]
    return pooled.to(features.dtype)


@torch.no_grad()
def offline_stream_logits(model: SSAMBA, audio: Tensor) -> Tensor:
    """Logits of every completed block of ``audio`` (batch, samples), computed offline at once.

    Returns (batch, blocks, classes): block k covers samples [k * chunk, (k + 1) * chunk).
    """
    model.check_streamable()
    cfg = model.config
    features = model.forward_features(stream_frames(model, audio))  # (batch, tokens, D)
    return model.classify(head_inputs(model, features, cfg.backward_block))
