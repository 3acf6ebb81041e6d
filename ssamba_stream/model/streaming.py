"""The streaming step (PCM chunk + state -> posteriors + state) and its offline reference.

A stream is defined as the audio with ``PRIMING_SAMPLES`` zeros before it (the frontend's carried
window overlap starts as zeros), cut into blocks of B tokens = B * 320 samples. For every completed
block the head pools the encoder features of the last W tokens (fewer at the start; the mean, or
learned attention weights) and classifies them. ``StreamStep`` computes one block from carried
state, in ops that export to ONNX and TensorRT; ``offline_stream_logits`` computes every block at
once from the whole recording. They are equal: that equality is the project's central test.

State of one step (all explicit, batch-first except the per-layer stacks, whose names and shapes
each layer's mixer declares: ``Mamba.state_shapes``):

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frontend import fbank_step, frame_geometry
from .ssamba import SSAMBA

ACTIVATIONS = ("softmax", "sigmoid")


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
    """One block of a stream: (pcm, *state) -> (posteriors, logits, features, *new_state).

    ``block`` (tokens per step; default the model's configured block) and ``scan`` (the scan form
    of any layer outside the one-block fast path, see ``ScanMode``) are the step's own: the model
    is left as it is. State tensors, in ``state_names`` order: ``leftover``, then one stack over
    layers per name the layers declare, then ``head_window`` and ``head_count``.
    """

    def __init__(
        self, model: SSAMBA, block: int | None = None, scan: str = "auto", activation: str = "softmax"
    ) -> None:
        super().__init__()
        model.check_streamable()
        self.mode = model.scan_mode("config" if block is None else block, scan)
        if self.mode.block is None:
            raise ValueError(
                "the model has a full backward scan and cannot stream: train it with backward_block=B"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.model = model.eval()
        self.frontend = model.make_frontend()
        self.activation = activation
        self.window = model.config.head_window
        self.chunk_samples = block_samples(model, self.mode.block)
        self.layer_state_names = tuple(model.stream_state_shapes())
        self.state_names = ("leftover", *self.layer_state_names, "head_window", "head_count")

    def state_batch_axis(self, name: str) -> int:
        """Axis of a state tensor that indexes streams: 1 for the per-layer stacks, 0 otherwise."""
        return 1 if name in self.layer_state_names else 0

    def initial_state(self, batch: int) -> dict[str, Tensor]:
        """Zero state at the start of a stream, keyed by ``state_names``."""
        layer_states = self.model.init_stream_state(batch)
        return {
            "leftover": torch.zeros(batch, self.frontend.window_length - self.frontend.hop_length),
            **{
                name: torch.stack(part)
                for name, part in zip(self.layer_state_names, zip(*layer_states, strict=True), strict=True)
            },
            "head_window": torch.zeros(batch, self.window, self.model.config.embed_dim),
            "head_count": torch.zeros(batch, 1),
        }

    def forward(self, pcm: Tensor, leftover: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        *layer_stacks, head_window, head_count = state
        frames, leftover = fbank_step(self.frontend, pcm, leftover)
        layer_states = list(zip(*(stack.unbind(0) for stack in layer_stacks), strict=True))
        features, layer_states = self.model.forward_chunk(frames, layer_states, self.mode)
        head_window = torch.cat([head_window, features], dim=1)[:, -self.window :]
        head_count = torch.clamp(head_count + features.shape[1], max=float(self.window))
        real = torch.arange(self.window, device=pcm.device)[None, :] >= self.window - head_count
        logits = self.model.classify(self.model.pool_window(head_window, real))
        new_stacks = [torch.stack(part) for part in zip(*layer_states, strict=True)]
        return (
            _activate(logits, self.activation),
            logits,
            features,
            leftover,
            *new_stacks,
            head_window,
            head_count,
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
def offline_stream_logits(model: SSAMBA, audio: Tensor, block: int | None = None) -> Tensor:
    """Logits of every completed block of ``audio`` (batch, samples), computed offline at once,
    with a backward block of ``block`` tokens (default the model's).

    Returns (batch, blocks, classes): block k covers samples [k * chunk, (k + 1) * chunk).
    """
    model.check_streamable()
    mode = model.scan_mode("config" if block is None else block)
    features = model.forward_features(stream_frames(model, audio, block=mode.block), mode=mode)
    return model.classify(head_inputs(model, features, mode.block))
