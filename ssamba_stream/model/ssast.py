"""SSAST baseline: the transformer SSAMBA's efficiency claims are measured against.

A DeiT-distilled ViT as SSAST builds it (YuanGongND/ssast ``ASTModel`` on timm's
``vit_deit_*_distilled_patch16``): a one-channel patch or frame projection, cls + distillation tokens, a
learned position embedding, pre-norm blocks (LayerNorm eps 1e-6, multi-head self-attention with a
biased qkv projection, GELU MLP of ratio 4, stochastic depth) and a final LayerNorm. Tokens, position
resizing, pooling and heads are SSAMBA's (``SpectrogramModel``), so training and evaluation code takes
either model. Parameter names follow timm under ``v.``: ``v.blocks.{i}.norm1/attn.qkv/attn.proj/
norm2/mlp.fc1/mlp.fc2``, ``v.norm``.

Attention is computed either written out as SSAST/timm do (``attention="explicit"``: the full
token x token score matrix, quadratic memory, as in the published efficiency comparison) or with
``torch.nn.functional.scaled_dot_product_attention`` (``"sdpa"``: fused kernels, memory linear in
length where the backend has a flash/memory-efficient kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DropPath, ModelConfig, SpectrogramModel, TokenEmbedding
from .scan_mode import ScanMode

ATTENTION_KINDS = ("explicit", "sdpa")


@dataclass
class SSASTConfig(ModelConfig):
    """SSAST: the shared fields plus the transformer's; defaults are SSAST-tiny's (timm DeiT-tiny)."""

    ARCH: ClassVar[str] = "ssast"

    arch: str = "ssast"
    depth: int = 12
    norm_eps: float = 1e-6
    drop_path: float = 0.0  # SSAST builds its ViTs with timm's default, no stochastic depth
    num_heads: int = 3
    mlp_ratio: float = 4.0
    dist_token: bool = True  # DeiT's distillation token; SSAST's base384_nokd has none
    attention: str = "sdpa"

    def _checks(self) -> list[tuple[bool, str]]:
        return super()._checks() + [
            (
                self.num_heads > 0 and self.embed_dim % self.num_heads == 0,
                f"embed_dim {self.embed_dim} must be a multiple of num_heads {self.num_heads}",
            ),
            (self.mlp_ratio > 0, f"mlp_ratio must be positive, got {self.mlp_ratio}"),
            (
                self.attention in ATTENTION_KINDS,
                f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}",
            ),
            (not self.dist_token or self.cls_token, "dist_token needs cls_token=True"),
        ]

    @property
    def extra_tokens(self) -> tuple[str, ...]:
        return super().extra_tokens + (("dist_token",) if self.dist_token else ())


class Attention(nn.Module):
    """Multi-head self-attention with timm's layout (one qkv projection, then proj)."""

    def __init__(self, dim: int, num_heads: int, explicit: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.explicit = explicit
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, length, head_dim)
        if self.explicit:
            weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """Position-wise feed-forward: fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x)), each branch with drop path."""

    def __init__(self, config: SSASTConfig, drop_path: float) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = Attention(dim, config.num_heads, explicit=config.attention == "explicit")
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(TokenEmbedding):
    """SSAST's encoder: the token embedding, the transformer blocks and the final LayerNorm."""

    def __init__(self, config: SSASTConfig) -> None:
        super().__init__(config)
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(TransformerBlock(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)


class SSAST(SpectrogramModel):
    """SSAST model (offline only: attention sees the whole clip) on normalised log-mel features."""

    config: SSASTConfig

    def _build_encoder(self, config: SSASTConfig) -> ViT:
        return ViT(config)

    def _run_layers(self, hidden: Tensor, mode: ScanMode | None = None) -> Tensor:
        for block in self.v.blocks:
            hidden = block(hidden)
        return self.v.norm(hidden)
