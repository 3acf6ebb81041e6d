"""SSAMBA encoder: configs and parameter counts, tokens, position embedding, heads, streaming equality."""

import json

import pytest
import torch

from ssamba_stream.model.base import resize_pos_embed
from ssamba_stream.model.registry import CONFIGS, build_config, build_model
from ssamba_stream.model.scan_mode import OFFLINE, ScanMode
from ssamba_stream.model.ssamba import SSAMBA, SSAMBAConfig

# Backbone (layers + norm_f + patch_embed + cls_token; no pos_embed, no heads), counted from the
# official module layout in tests/official_ssamba_keys.py; the paper rounds them to 6.8M/25.1M/96.3M.
PUBLISHED_BACKBONE = {"ssamba-tiny": 6_823_680, "ssamba-small": 25_148_928, "ssamba-base": 96_304_128}


def _backbone_params(model: SSAMBA) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name != "v.pos_embed")


@pytest.mark.parametrize("name", sorted(PUBLISHED_BACKBONE))
def test_published_configs_match_parameter_counts(name):
    model = build_model(name)
    assert _backbone_params(model) == PUBLISHED_BACKBONE[name]
    assert model.config.depth == 24 and model.config.pair_layers and model.config.grid == (8, 64)
    assert model.v.pos_embed.shape == (1, 513, model.config.embed_dim)


def test_kws_config_is_small_and_streams():
    model = build_model("ssamba-kws", num_classes=12)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.0e6
    model.check_streamable()
    with pytest.raises(ValueError, match="ssamba-kws"):
        build_model("ssamba-tiny").check_streamable()


def test_config_json_round_trip_and_validation():
    config = build_config("ssamba-kws", num_classes=3, labels=["a", "b", "c"])
    assert SSAMBAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown config keys"):
        SSAMBAConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="labels"):
        build_config("ssamba-kws", num_classes=2, labels=["a"])
    with pytest.raises(ValueError, match="unknown model config"):
        build_config("ssamba-huge")
    with pytest.raises(ValueError, match="tokens"):
        SSAMBAConfig(tokens="pixel")


def test_tokens_are_frequency_major_patches():
    config = SSAMBAConfig(
        embed_dim=8, depth=2, fshape=16, tshape=16, fstride=16, tstride=16, target_length=64
    )
    model = SSAMBA(config)
    fbank = torch.randn(2, 64, 128)
    patches = model.patchify(fbank)
    assert patches.shape == (2, 8 * 4, 256)
    f, t = 3, 2  # token index f * t_dim + t holds mel rows f*16.. and frames t*16..
    expected = fbank[:, t * 16 : (t + 1) * 16, f * 16 : (f + 1) * 16].transpose(1, 2).reshape(2, 256)
    assert torch.equal(patches[:, f * 4 + t], expected)
    # the embedding is the same linear map of the same patch (targets and inputs line up for SSL)
    weight = model.v.patch_embed.proj.weight.reshape(8, 256)
    assert torch.allclose(
        model.tokenize(fbank), patches @ weight.t() + model.v.patch_embed.proj.bias, atol=1e-5
    )


def test_frame_tokens_follow_time():
    model = build_model("ssamba-kws", num_classes=2).eval()
    fbank = torch.randn(1, 40, 128)
    tokens = model.tokenize(fbank)
    assert tokens.shape == (1, 20, 96)
    changed = fbank.clone()
    changed[:, 10:12] += 1.0  # frames 10-11 form token 5
    moved = (model.tokenize(changed) - tokens).abs().sum(-1)[0]
    assert moved.nonzero().flatten().tolist() == [5]


def test_resize_pos_embed_cuts_centre_and_interpolates():
    grid = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 24, 1)
    pos = torch.cat([torch.full((1, 1, 1), -1.0), grid], dim=1)
    cut = resize_pos_embed(pos, 1, (4, 6), (2, 2))
    assert cut[0, 0, 0] == -1.0
    assert cut[0, 1:, 0].tolist() == [8.0, 9.0, 14.0, 15.0]  # rows 1-2, columns 2-3 of the 4x6 grid
    grown = resize_pos_embed(pos, 1, (4, 6), (4, 12))
    assert grown.shape == (1, 1 + 48, 1)
    row0 = grown[0, 1:13, 0]
    assert row0.min() == 0.0 and row0.max() == 5.0 and torch.all(row0[1:] >= row0[:-1])
    with pytest.raises(ValueError, match="expected 4x5"):
        resize_pos_embed(pos, 1, (4, 5), (2, 2))


def test_patch_model_accepts_other_lengths():
    model = build_model("ssamba-tiny", depth=2, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 128, 128)).shape == (2, 5)
        assert model(torch.randn(1, 1024, 128)).shape == (1, 5)
    with pytest.raises(ValueError, match=r"\(batch, frames, 128\)"):
        model(torch.randn(2, 128, 64))


def test_heads():
    config = dict(depth=2, num_classes=4, drop_path=0.0)
    fbank = torch.randn(2, 128, 128)
    torch.manual_seed(0)
    avg = build_model("ssamba-tiny", **config).eval()
    hidden = avg.forward_features(fbank)
    assert hidden.shape == (2, 1 + 8 * 8, 192)
    assert torch.allclose(avg(fbank), avg.mlp_head(hidden[:, 1:].mean(1)), atol=1e-6)
    torch.manual_seed(0)
    cls = build_model("ssamba-tiny", head="cls", **config).eval()
    assert torch.allclose(cls(fbank), cls.mlp_head(hidden[:, 0]), atol=1e-6)
    torch.manual_seed(0)
    twice = build_model("ssamba-tiny", final_norm_twice=True, **config).eval()
    assert torch.allclose(twice(fbank), twice.mlp_head(twice.v.norm_f(hidden[:, 1:].mean(1))), atol=1e-6)
    with pytest.raises(ValueError, match="no classifier head"):
        build_model("ssamba-tiny", depth=2)(fbank)


def test_attention_pool_starts_as_the_mean_and_learns_weights():
    fbank = torch.randn(2, 100, 128)
    mean = build_model("ssamba-kws", num_classes=3, drop_path=0.0).eval()
    attention = build_model("ssamba-kws", num_classes=3, drop_path=0.0, head_pool="attention").eval()
    assert set(attention.state_dict()) - set(mean.state_dict()) == {
        "head_attention.weight",
        "head_attention.bias",
    }
    attention.load_state_dict({**attention.state_dict(), **mean.state_dict()})
    assert torch.allclose(attention(fbank), mean(fbank), atol=1e-6)  # zero scores: uniform weights
    hidden = attention.forward_features(fbank)
    with torch.no_grad():
        attention.head_attention.weight.normal_()
    weights = torch.softmax(attention.head_attention(hidden).squeeze(-1), dim=-1)
    expected = attention.mlp_head((weights[..., None] * hidden).sum(1))
    assert torch.allclose(attention(fbank), expected, atol=1e-5)
    assert not torch.allclose(attention(fbank), mean(fbank), atol=1e-3)
    real = torch.tensor([False, True, True])
    tokens = torch.randn(3, 96)
    tokens_changed = tokens.clone()
    tokens_changed[0] += 100.0  # a token outside the window changes nothing
    assert torch.equal(attention.pool_window(tokens, real), attention.pool_window(tokens_changed, real))
    with pytest.raises(ValueError, match="head_pool must be one of"):
        build_model("ssamba-kws", num_classes=3, head_pool="max")


def test_mask_embedding_replaces_masked_tokens():
    model = build_model("ssamba-tiny", depth=2, ssl_heads=True).eval()
    a, b = torch.randn(1, 128, 128), torch.randn(1, 128, 128)
    all_masked = torch.ones(1, 64, dtype=torch.bool)
    assert torch.allclose(
        model.forward_features(a, all_masked), model.forward_features(b, all_masked), atol=1e-6
    )
    some = torch.zeros(1, 64, dtype=torch.bool)
    some[0, :10] = True
    assert not torch.allclose(model.forward_features(a, some), model.forward_features(b, some))
    with pytest.raises(ValueError, match="ssl_heads=True"):
        build_model("ssamba-tiny", depth=2).forward_features(a, some)


def test_paired_layers_see_both_orders():
    """With pair_layers, every output token depends on tokens before and after it even with B=1."""
    torch.manual_seed(0)
    model = build_model("ssamba-kws", depth=2, pair_layers=True, backward_block=1, num_classes=2).eval()
    fbank = torch.randn(1, 8, 128)  # 4 tokens: over 10 the reverse scan's decay leaves float noise
    base = model.forward_features(fbank)
    changed = fbank.clone()
    changed[:, -2:] += 1.0  # the last token
    assert (model.forward_features(changed)[:, 0] - base[:, 0]).abs().max() > 1e-4
    solo = build_model("ssamba-kws", depth=2, pair_layers=False, backward_block=1, num_classes=2).eval()
    assert torch.equal(solo.forward_features(changed)[:, 0], solo.forward_features(fbank)[:, 0])


def test_paired_layers_equal_the_official_flips():
    """The second layer of a pair runs on flip(x) in the official code; ours swaps its directions."""
    torch.manual_seed(0)
    model = build_model("ssamba-tiny", depth=4, num_classes=2).eval()
    hidden = torch.randn(2, 40, model.config.embed_dim)
    with torch.no_grad():
        h, residual = hidden, None
        for first, second in zip(model.v.layers[::2], model.v.layers[1::2], strict=True):
            h_f, r_f = first(h, residual, OFFLINE)
            h_b, r_b = second(h.flip(1), None if residual is None else residual.flip(1), OFFLINE)
            h, residual = h_f + h_b.flip(1), r_f + r_b.flip(1)
        official = model._final_norm(h, residual)
        assert torch.allclose(model._run_layers(hidden, OFFLINE), official, atol=1e-5)


@pytest.mark.parametrize("block,chunk_tokens", [(8, 8), (8, 24), (4, 4), (2, 10)])
def test_streaming_chunks_equal_offline(block, chunk_tokens):
    torch.manual_seed(block)
    model = build_model("ssamba-kws", backward_block=block, num_classes=12).eval()
    fbank = torch.randn(2, 2 * 120, 128)
    offline = model.forward_features(fbank)
    states = model.init_stream_state(2)
    pieces = []
    for chunk in fbank.split(2 * chunk_tokens, dim=1):
        out, states = model.forward_chunk(chunk, states)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, dim=1), offline, atol=1e-5)


def test_drop_path_only_in_training():
    model = build_model("ssamba-kws", drop_path=0.5, num_classes=2)
    fbank = torch.randn(4, 32, 128)
    model.eval()
    assert torch.equal(model(fbank), model(fbank))
    model.train()
    torch.manual_seed(0)
    first = model(fbank)
    assert not torch.allclose(first, model(fbank))


def test_every_config_builds():
    for name in CONFIGS:
        assert build_model(name).config.name == name


def test_scan_mode_keeps_the_configured_lookahead_for_any_block():
    """A block size chosen per call (dynamic-chunk training, export at another block) keeps the look-ahead
    the model was built with; a full backward has none."""
    model = build_model("ssamba-kws", depth=2, embed_dim=32, num_classes=2, backward_block=4, lookahead=2)
    assert model.scan_mode() == ScanMode(4, 2)
    assert model.scan_mode(8) == ScanMode(8, 2)
    assert model.scan_mode(None) == ScanMode(None, 0)
    assert model.scan_mode(8, scan="ref") == ScanMode(8, 2, "ref")
