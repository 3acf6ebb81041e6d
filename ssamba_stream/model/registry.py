"""Named model configs and the architectures that build them (SSAMBA, SSAST).

The one place that knows every architecture: ``build_model("ssamba-kws")``, ``config_from_dict``
for a saved config, ``CONFIGS`` for the named presets.
"""

from __future__ import annotations

import dataclasses

from .base import ModelConfig, SpectrogramModel
from .ssamba import SSAMBA, SSAMBAConfig
from .ssast import SSAST, SSASTConfig

ARCHITECTURES: dict[str, tuple[type[ModelConfig], type[SpectrogramModel]]] = {
    "ssamba": (SSAMBAConfig, SSAMBA),
    "ssast": (SSASTConfig, SSAST),
}


def architecture(arch: str) -> tuple[type[ModelConfig], type[SpectrogramModel]]:
    """Config and model classes of ``arch``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {tuple(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def config_from_dict(data: dict) -> ModelConfig:
    """A saved config of any architecture (``arch`` absent = SSAMBA, as written before SSAST existed)."""
    return architecture(data.get("arch", "ssamba"))[0].from_dict(data)


_PUBLISHED = dict(
    depth=24,
    tokens="patch",
    fshape=16,
    tshape=16,
    fstride=16,
    tstride=16,
    target_length=1024,
    pos_embed=True,
    cls_token=True,
    pair_layers=True,
    norm="layernorm",
    drop_path=0.1,
)
_SSAST_PUBLISHED = dict(
    depth=12,
    tokens="patch",
    fshape=16,
    tshape=16,
    fstride=16,
    tstride=16,
    target_length=1024,
    pos_embed=True,
    cls_token=True,
    dist_token=True,
    drop_path=0.0,
)

CONFIGS: dict[str, dict] = {
    # SSAMBA as published (src/pretrain/run_mask_patch_amba.sh): patch tokens, depth 24, paired layers.
    "ssamba-tiny": dict(name="ssamba-tiny", embed_dim=192, **_PUBLISHED),
    "ssamba-small": dict(name="ssamba-small", embed_dim=384, **_PUBLISHED),
    "ssamba-base": dict(name="ssamba-base", embed_dim=768, **_PUBLISHED),
    # Streaming keyword spotting on CPU: frame tokens (20 ms each), block-local backward over 8
    # tokens (160 ms), no position embedding or cls token (an unbounded stream has no position).
    # Embed 96 x depth 8 (~0.68M parameters) trains on a 2-core CPU in minutes per epoch and is in
    # the size class of the strong small KWS models (ds_tc_resnet 75K, KWT-1 607K).
    "ssamba-kws": dict(
        name="ssamba-kws",
        embed_dim=96,
        depth=8,
        tokens="frame",
        fshape=128,
        tshape=2,
        fstride=128,
        tstride=2,
        target_length=100,
        pos_embed=False,
        cls_token=False,
        pair_layers=False,
        backward_block=8,
        drop_path=0.05,
        norm_mean=-6.845978,
        norm_std=5.5654526,
    ),
    # SSAST as published (YuanGongND/ssast, patch pretraining): DeiT-distilled ViTs (cls + distillation
    # token), depth 12, the baseline SSAMBA's efficiency and accuracy are measured against.
    "ssast-tiny": dict(name="ssast-tiny", arch="ssast", embed_dim=192, num_heads=3, **_SSAST_PUBLISHED),
    "ssast-small": dict(name="ssast-small", arch="ssast", embed_dim=384, num_heads=6, **_SSAST_PUBLISHED),
    "ssast-base": dict(name="ssast-base", arch="ssast", embed_dim=768, num_heads=12, **_SSAST_PUBLISHED),
}


def build_config(name: str, **overrides) -> ModelConfig:
    """A named config (``CONFIGS``) with keyword overrides."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}: choose one of {sorted(CONFIGS)}")
    entry = CONFIGS[name]
    return architecture(entry.get("arch", "ssamba"))[0](**{**entry, **overrides})


def build_model(name_or_config: str | ModelConfig, **overrides) -> SpectrogramModel:
    """A model of any architecture from a named config (with overrides) or a config object."""
    if isinstance(name_or_config, ModelConfig):
        config = dataclasses.replace(name_or_config, **overrides) if overrides else name_or_config
    else:
        config = build_config(name_or_config, **overrides)
    return architecture(config.arch)[1](config)
