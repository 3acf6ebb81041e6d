"""SSAST baseline: published sizes, timm names, explicit vs SDPA attention, tokens, heads, position, gradients."""

import json

import pytest
import torch

from ssamba_stream.model.base import SpectrogramModel, resize_pos_embed
from ssamba_stream.model.registry import build_config, build_model, config_from_dict
from ssamba_stream.model.ssamba import SSAMBAConfig
from ssamba_stream.model.ssast import SSAST, SSASTConfig

SIZES = {"ssast-tiny": (192, 3), "ssast-small": (384, 6), "ssast-base": (768, 12)}
# Backbone = patch projection + cls/dist tokens + 12 blocks + final norm (no position embedding, no
# heads), as for SSAMBA in test_ssamba.py. Per block 12*D^2 + 13*D: qkv 3D^2+3D, proj D^2+D, fc1 4D^2+4D,
# fc2 4D^2+D, two LayerNorms 4D. Adding the position embedding (514 x D), the SSL heads and timm's unused
# 1000-way head + head_dist gives 6.05M / 22.9M / 88.8M, the 6M / 23M / 89M SSAST reports.
BACKBONE = {"ssast-tiny": 5_388_480, "ssast-small": 21_393_792, "ssast-base": 85_254_912}


def _backbone_params(model: SpectrogramModel) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name != "v.pos_embed")


def _perturbed(seed: int = 0, **overrides) -> SSAST:
    """A small SSAST with perturbed weights, so attention is far from uniform (mean top weight ~0.3 vs 1/66)."""
    torch.manual_seed(seed)
    model = build_model("ssast-tiny", depth=2, num_classes=4, **overrides).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", sorted(BACKBONE))
def test_published_sizes(name):
    dim, heads = SIZES[name]
    model = build_model(name)
    assert isinstance(model, SSAST) and model.config.arch == "ssast"
    assert (
        _backbone_params(model)
        == BACKBONE[name]
        == 12 * (12 * dim**2 + 13 * dim) + 257 * dim + 2 * dim + 2 * dim
    )
    assert model.config.depth == 12 and model.config.num_heads == heads and model.config.grid == (8, 64)
    assert model.v.pos_embed.shape == (1, 2 + 512, dim)


def test_parameter_names_follow_timm():
    names = list(build_model("ssast-tiny", depth=1, num_classes=2, ssl_heads=True).state_dict())
    block = [
        f"v.blocks.0.{m}.{p}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    ]
    heads = [f"{h}.{i}.{p}" for h in ("cpredlayer", "gpredlayer") for i in (0, 2) for p in ("weight", "bias")]
    assert sorted(names) == sorted(
        [
            "v.cls_token",
            "v.dist_token",
            "v.pos_embed",
            "v.patch_embed.proj.weight",
            "v.patch_embed.proj.bias",
            *block,
            "v.norm.weight",
            "v.norm.bias",
            "mlp_head.0.weight",
            "mlp_head.0.bias",
            "mlp_head.1.weight",
            "mlp_head.1.bias",
            *heads,
            "mask_embed",
        ]
    )


@pytest.mark.parametrize("frames", [128, 400])
def test_explicit_and_sdpa_attention_agree(frames):
    explicit = _perturbed(attention="explicit")
    sdpa = build_model(explicit.config, attention="sdpa").eval()
    sdpa.load_state_dict(explicit.state_dict())
    assert explicit.v.blocks[0].attn.explicit and not sdpa.v.blocks[0].attn.explicit
    fbank = torch.randn(2, frames, 128)
    with torch.no_grad():
        assert torch.allclose(
            explicit.forward_features(fbank), sdpa.forward_features(fbank), atol=1e-5, rtol=0
        )
        assert torch.allclose(explicit(fbank), sdpa(fbank), atol=1e-5, rtol=0)


def test_patch_and_frame_tokens():
    patch = build_model("ssast-tiny", depth=1).eval()
    fbank = torch.randn(2, 128, 128)
    assert patch.patchify(fbank).shape == (2, 64, 256)
    assert patch.forward_features(fbank).shape == (2, 2 + 8 * 8, 192)
    frame = build_model(
        "ssast-tiny", depth=1, tokens="frame", fshape=128, tshape=2, fstride=128, tstride=2, target_length=100
    ).eval()
    assert frame.config.grid == (1, 50) and frame.v.pos_embed.shape == (1, 52, 192)
    assert frame.patchify(torch.randn(2, 100, 128)).shape == (2, 50, 256)
    assert frame.forward_features(torch.randn(2, 100, 128)).shape == (2, 52, 192)


def test_heads():
    fbank = torch.randn(2, 128, 128)
    avg = _perturbed()
    hidden = avg.forward_features(fbank)
    assert torch.allclose(avg(fbank), avg.mlp_head(hidden[:, 2:].mean(1)), atol=1e-6)
    cls = _perturbed(head="cls")  # same seed, same weights: SSAST's ft_cls averages cls and dist outputs
    assert torch.allclose(cls(fbank), cls.mlp_head((hidden[:, 0] + hidden[:, 1]) / 2), atol=1e-6)
    with pytest.raises(ValueError, match="no classifier head"):
        build_model("ssast-tiny", depth=1)(fbank)
    ssl = build_model("ssast-tiny", depth=1, ssl_heads=True).eval()
    out = ssl.forward_features(fbank)
    assert ssl.cpredlayer(out[:, 2:]).shape == ssl.gpredlayer(out[:, 2:]).shape == (2, 64, 256)
    a, b = torch.randn(1, 128, 128), torch.randn(1, 128, 128)
    all_masked = torch.ones(1, 64, dtype=torch.bool)
    assert torch.allclose(ssl.forward_features(a, all_masked), ssl.forward_features(b, all_masked), atol=1e-6)


def test_position_embedding_follows_input_length():
    model = _perturbed()
    for frames, grid in ((256, (8, 16)), (2048, (8, 128))):  # cut, then interpolated
        fbank = torch.randn(1, frames, 128)
        tokens = model.tokenize(fbank)
        pos = resize_pos_embed(model.v.pos_embed, 2, (8, 64), grid)
        extra = torch.cat([model.v.cls_token, model.v.dist_token], dim=1)
        expected = model._run_layers(torch.cat([extra, tokens], dim=1) + pos)
        assert torch.allclose(model.forward_features(fbank), expected, atol=1e-6)
        assert expected.shape == (1, 2 + grid[0] * grid[1], 192)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_gradients_reach_every_parameter(attention):
    torch.manual_seed(0)
    model = build_model("ssast-tiny", depth=2, num_classes=3, drop_path=0.1, attention=attention).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 96, 128)), torch.tensor([0, 2]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    model.eval()
    fbank = torch.randn(1, 64, 128)
    assert torch.equal(model(fbank), model(fbank))  # drop path only while training


def test_configs_round_trip_and_validate():
    config = build_config("ssast-small", num_classes=2, labels=["yes", "no"], attention="explicit")
    assert isinstance(config, SSASTConfig) and config.extra_tokens == ("cls_token", "dist_token")
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config_from_dict(
        {k: v for k, v in build_config("ssamba-kws").to_dict().items() if k != "arch"}
    ) == build_config("ssamba-kws")
    with pytest.raises(ValueError, match="unknown config keys"):
        SSAMBAConfig.from_dict(config.to_dict())
    with pytest.raises(ValueError, match="config_from_dict"):
        SSASTConfig(arch="ssamba")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        SSASTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="attention"):
        SSASTConfig(attention="flash")
    with pytest.raises(ValueError, match="dist_token needs cls_token"):
        SSASTConfig(cls_token=False)
    no_dist = build_model(SSASTConfig(depth=1, dist_token=False, head="cls", num_classes=2))
    assert no_dist.v.pos_embed.shape == (1, 1 + 512, 192) and not hasattr(no_dist.v, "dist_token")
