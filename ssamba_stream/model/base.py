"""What every spectrogram encoder shares: config fields, tokens, position, masking, pooling, heads.

Two kinds of tokens, as in SSAST/SSAMBA: 16x16 patches (offline; with a learned position embedding
and a cls token) and frames (all 128 mel bins x 2 frames, one token per 20 ms, no position: the
streaming model). Heads: the average-token classifier (SSAMBA's ``ft_avgtok``), the cls classifier
(``ft_cls``) and the self-supervised prediction heads (``cpredlayer``/``gpredlayer`` + ``mask_embed``).
Module names match the official checkpoints under ``module.v.`` (encoder) and ``module.`` (heads).
SSAMBA (``ssamba.py``) and the SSAST baseline (``ssast.py``) build on this module only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frontend import KaldiFbank
from .scan_mode import ScanMode

TOKEN_KINDS = ("patch", "frame")
HEAD_KINDS = ("avgtok", "cls")
HEAD_POOLS = ("mean", "attention")
SSL_TARGET_DIM = 256  # a raw 16x16 patch or 128x2 frame pair, the target of the SSL heads


@dataclass
class ModelConfig:
    """Fields every architecture shares (tokens, position, heads, frontend); saved as JSON beside the weights.

    The encoder's own fields live in a subclass (``SSAMBAConfig``, ``ssast.SSASTConfig``); ``arch`` records
    which, so that ``config_from_dict`` can rebuild a saved config of either.
    """

    ARCH: ClassVar[str] = ""

    name: str = "custom"
    arch: str = ""
    embed_dim: int = 192
    depth: int = 24
    norm_eps: float = 1e-5
    drop_path: float = 0.1
    tokens: str = "patch"
    fshape: int = 16
    tshape: int = 16
    fstride: int = 16
    tstride: int = 16
    num_mel_bins: int = 128
    target_length: int = 1024  # frames; sets the position-embedding grid
    pos_embed: bool = True
    cls_token: bool = True
    head: str = "avgtok"
    num_classes: int = 0  # 0 = no classifier head
    ssl_heads: bool = False
    head_window: int = 50  # tokens the streaming head pools (50 frame tokens = 1 s)
    # How the head pools its tokens: "mean", or "attention" (softmax weights from a learned score per
    # token, so a short word need not be diluted by the second of noise around it; zero-initialised,
    # it starts as the mean, and a mean-pooled checkpoint initialises it without a change of output)
    head_pool: str = "mean"
    sample_rate: int = 16000
    norm_mean: float = -4.2677393  # fbank normalisation (x - mean) / (2 * std); AudioSet+LibriSpeech
    norm_std: float = 4.5689974
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for ok, message in self._checks():
            if not ok:
                raise ValueError(message)
        if self.fshape * self.tshape != SSL_TARGET_DIM and self.ssl_heads:
            raise ValueError(
                f"SSL heads predict {SSL_TARGET_DIM}-value tokens: use 16x16 patches or 128x2 frames"
            )

    def _checks(self) -> list[tuple[bool, str]]:
        """(condition, error message) pairs; subclasses add their encoder's."""
        return [
            (
                self.arch == self.ARCH,
                f"{type(self).__name__} has arch {self.ARCH!r}, got {self.arch!r}: build it with config_from_dict",
            ),
            (self.tokens in TOKEN_KINDS, f"tokens must be one of {TOKEN_KINDS}, got {self.tokens!r}"),
            (self.head in HEAD_KINDS, f"head must be one of {HEAD_KINDS}, got {self.head!r}"),
            (self.embed_dim > 0 and self.depth > 0, "embed_dim and depth must be positive"),
            (
                self.fshape <= self.num_mel_bins,
                f"fshape {self.fshape} exceeds num_mel_bins {self.num_mel_bins}",
            ),
            (self.head != "cls" or self.cls_token, "head='cls' needs cls_token=True"),
            (self.head_pool in HEAD_POOLS, f"head_pool must be one of {HEAD_POOLS}, got {self.head_pool!r}"),
            (
                self.head_pool == "mean" or self.head == "avgtok",
                "head_pool='attention' pools tokens: use head='avgtok'",
            ),
            (
                not self.labels or len(self.labels) == self.num_classes,
                f"{len(self.labels)} labels given for num_classes={self.num_classes}",
            ),
        ]

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (frequency, time) for an input of ``target_length`` frames."""
        return token_grid(self, self.target_length)

    @property
    def extra_tokens(self) -> tuple[str, ...]:
        """Names of the learned tokens put before the spectrogram tokens, in order."""
        return ("cls_token",) if self.cls_token else ()

    @property
    def num_extra_tokens(self) -> int:
        return len(self.extra_tokens)

    @property
    def frames_per_token(self) -> int:
        return self.tstride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}: the file was written by a newer or other tool")
        return cls(**data)


def token_grid(config: ModelConfig, num_frames: int) -> tuple[int, int]:
    """(frequency, time) token counts of the patch convolution for ``num_frames`` input frames."""
    f_dim = (config.num_mel_bins - config.fshape) // config.fstride + 1
    t_dim = (num_frames - config.tshape) // config.tstride + 1
    return f_dim, max(t_dim, 0)


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability p while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class PatchEmbed(nn.Module):
    """Spectrogram (batch, 1, mel, frames) -> tokens (batch, N, D), frequency-major as in SSAST."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            1, config.embed_dim, (config.fshape, config.tshape), stride=(config.fstride, config.tstride)
        )

    def forward(self, spec: Tensor) -> Tensor:
        return self.proj(spec).flatten(2).transpose(1, 2)


class TokenEmbedding(nn.Module):
    """What every encoder (the official ``v.`` submodule) starts with: patch projection, extra tokens, position."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        for name in config.extra_tokens:
            self.register_parameter(name, nn.Parameter(torch.zeros(1, 1, dim)))
        if config.pos_embed:
            f_dim, t_dim = config.grid
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_extra_tokens + f_dim * t_dim, dim))


def resize_pos_embed(
    pos_embed: Tensor, num_extra: int, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """SSAST/SSAMBA's adaptation of a learned position embedding to another token grid.

    Per axis: a centred cut where the new grid is smaller, bilinear interpolation where it is larger
    (the time axis first, then frequency). SSAST's code hard-codes 8 frequency rows and slices the
    frequency cut with the time size; this implements the intended behaviour instead.
    """
    (old_f, old_t), (new_f, new_t) = old_grid, new_grid
    extra, grid = pos_embed[:, :num_extra], pos_embed[:, num_extra:]
    dim = grid.shape[-1]
    if grid.shape[1] != old_f * old_t:
        raise ValueError(f"position embedding has {grid.shape[1]} grid entries, expected {old_f}x{old_t}")
    grid = grid.transpose(1, 2).reshape(1, dim, old_f, old_t)
    if new_t < old_t:
        start = old_t // 2 - new_t // 2
        grid = grid[..., start : start + new_t]
    elif new_t > old_t:
        grid = F.interpolate(grid, size=(old_f, new_t), mode="bilinear")
    if new_f < old_f:
        start = old_f // 2 - new_f // 2
        grid = grid[:, :, start : start + new_f]
    elif new_f > old_f:
        grid = F.interpolate(grid, size=(new_f, new_t), mode="bilinear")
    grid = grid.reshape(1, dim, new_f * new_t).transpose(1, 2)
    return torch.cat([extra, grid], dim=1)


class SpectrogramModel(nn.Module):
    """What SSAMBA and SSAST share: tokens, extra tokens and position, masking, pooling and heads.

    Input: normalised log-mel features (batch, frames, mel bins). A subclass builds the ``v`` encoder
    (``_build_encoder``, a ``TokenEmbedding``) and runs its blocks (``_run_layers``), so that training
    and evaluation code can use either architecture through the same methods and head names.
    """

    _OWN_INIT: tuple[str, ...] = ()  # suffixes of module names that keep the initialisation they built

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.v = self._build_encoder(config)
        dim = config.embed_dim
        if config.num_classes:
            self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, config.num_classes))
            if config.head_pool == "attention":
                self.head_attention = nn.Linear(dim, 1)
        if config.ssl_heads:
            self.cpredlayer = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, SSL_TARGET_DIM))
            self.gpredlayer = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, SSL_TARGET_DIM))
            self.mask_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self._init_weights()

    def _build_encoder(self, config: ModelConfig) -> TokenEmbedding:
        raise NotImplementedError

    def _run_layers(self, hidden: Tensor, mode: ScanMode | None = None) -> Tensor:
        """The block stack and final norm on (batch, extra + N, D) embedded tokens (``mode``: see forward_features)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ initialisation
    def _init_weights(self) -> None:
        """ViT/Vim initialisation: truncated-normal linears with zero biases, truncated-normal extra
        tokens and position embedding, Xavier-normal mask embedding (as SSAST)."""
        own = {id(m) for name, m in self.named_modules() if name.endswith(self._OWN_INIT)}
        for module in self.modules():
            if isinstance(module, nn.Linear) and id(module) not in own:
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self._init_encoder()
        for name in (*self.config.extra_tokens, "pos_embed"):
            if hasattr(self.v, name):
                nn.init.trunc_normal_(getattr(self.v, name), std=0.02)
        if self.config.ssl_heads:
            nn.init.xavier_normal_(self.mask_embed)
        if hasattr(self, "head_attention"):  # uniform weights: the mean
            nn.init.zeros_(self.head_attention.weight)
            nn.init.zeros_(self.head_attention.bias)

    def _init_encoder(self) -> None:
        """Encoder-specific initialisation after the linears' (none by default)."""

    def make_frontend(self) -> KaldiFbank:
        """The feature extractor this model was trained with (rate, mel bins, normalisation)."""
        cfg = self.config
        return KaldiFbank(
            sample_rate=cfg.sample_rate,
            num_mel_bins=cfg.num_mel_bins,
            norm_mean=cfg.norm_mean,
            norm_std=cfg.norm_std,
        )

    # ------------------------------------------------------------------ tokens
    def tokenize(self, fbank: Tensor) -> Tensor:
        """(batch, frames, mel) -> token embeddings (batch, N, D), before extra tokens and position."""
        self._check_features(fbank)
        return self.v.patch_embed(fbank.transpose(1, 2).unsqueeze(1))

    def patchify(self, fbank: Tensor) -> Tensor:
        """Raw (unembedded) token contents (batch, N, fshape*tshape): the SSL reconstruction targets."""
        cfg = self.config
        spec = fbank.transpose(1, 2).unsqueeze(1)
        patches = F.unfold(spec, (cfg.fshape, cfg.tshape), stride=(cfg.fstride, cfg.tstride))
        return patches.transpose(1, 2)

    def _check_features(self, fbank: Tensor) -> None:
        cfg = self.config
        if fbank.dim() != 3 or fbank.shape[-1] != cfg.num_mel_bins:
            raise ValueError(
                f"expected features of shape (batch, frames, {cfg.num_mel_bins}), got {tuple(fbank.shape)}"
            )
        if fbank.shape[1] < cfg.tshape:
            raise ValueError(f"input has {fbank.shape[1]} frames, fewer than one token ({cfg.tshape} frames)")

    def _add_position(self, tokens: Tensor, num_frames: int) -> Tensor:
        cfg = self.config
        extra = [getattr(self.v, name).expand(tokens.shape[0], -1, -1) for name in cfg.extra_tokens]
        if extra:
            tokens = torch.cat([*extra, tokens], dim=1)
        if cfg.pos_embed:
            pos = self.v.pos_embed
            grid = token_grid(cfg, num_frames)
            if grid != cfg.grid:
                pos = resize_pos_embed(pos, cfg.num_extra_tokens, cfg.grid, grid)
            tokens = tokens + pos
        return tokens

    # ------------------------------------------------------------------ encoder and heads
    def forward_features(
        self, fbank: Tensor, token_mask: Tensor | None = None, mode: ScanMode | None = None
    ) -> Tensor:
        """Encoder output for all tokens (extra tokens first, if any): (batch, extra + N, D).

        ``token_mask`` (batch, N) bool replaces those tokens by the learned mask embedding (SSL).
        ``mode`` sets how state-space layers scan (backward block, scan form; default: the
        model's configured block); attention layers ignore it.
        """
        tokens = self.tokenize(fbank)
        if token_mask is not None:
            if not self.config.ssl_heads:
                raise ValueError("token masking needs the SSL heads: build the model with ssl_heads=True")
            tokens = torch.where(token_mask[..., None], self.mask_embed.to(tokens.dtype), tokens)
        return self._run_layers(self._add_position(tokens, fbank.shape[1]), mode)

    def pool(self, hidden: Tensor) -> Tensor:
        """Clip embedding: the mean of the extra tokens (``ft_cls``; SSAST averages its cls and
        distillation tokens), or the mean of the other tokens (``ft_avgtok``)."""
        extra = self.config.num_extra_tokens
        if self.config.head == "cls":
            return hidden[:, :extra].mean(dim=1)
        tokens = hidden[:, extra:]
        return self.pool_window(tokens, torch.ones(tokens.shape[:-1], dtype=torch.bool, device=tokens.device))

    def pool_window(self, tokens: Tensor, real: Tensor) -> Tensor:
        """Head input from token features (..., W, D) of which ``real`` (..., W) marks the ones to
        pool (the others, such as the zeros before a stream's start, get weight 0): ``head_pool``."""
        if self.config.head_pool == "attention":
            scores = self.head_attention(tokens).squeeze(-1).masked_fill(~real, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = real.to(tokens.dtype) / real.sum(dim=-1, keepdim=True).to(tokens.dtype)
        return (weights.unsqueeze(-1) * tokens).sum(dim=-2)

    def classify(self, pooled: Tensor) -> Tensor:
        if not self.config.num_classes:
            raise ValueError("this model has no classifier head (num_classes=0): fine-tune it first")
        return self.mlp_head(pooled)

    def forward(self, fbank: Tensor, mode: ScanMode | None = None) -> Tensor:
        """Logits (batch, num_classes) for whole clips of normalised fbank features."""
        return self.classify(self.pool(self.forward_features(fbank, mode=mode)))
