"""Mamba mixer: Vim bimamba-v2 semantics, block-local backward, carried-state chunks, initialisation."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssamba_stream.model import mamba as mamba_module
from ssamba_stream.model.mamba import Mamba
from ssamba_stream.model.native_scan import native_scan_available
from ssamba_stream.model.scan_mode import ScanMode

DIRECTION_PARAMS = [
    ("conv1d", "conv1d_b"),
    ("x_proj", "x_proj_b"),
    ("dt_proj", "dt_proj_b"),
    ("A_log", "A_b_log"),
    ("D", "D_b"),
]


def _mixer(seed: int = 0, **kwargs) -> Mamba:
    """A mixer whose two directions hold different values (they start out identical but for dt)."""
    torch.manual_seed(seed)
    mixer = Mamba(16, **kwargs).eval()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer


def _shared_copy(source: Mamba, **kwargs) -> Mamba:
    clone = Mamba(16, **kwargs).eval()
    clone.load_state_dict(source.state_dict())
    return clone


def test_parameter_names_follow_mamba_ssm_and_vim():
    names = set(Mamba(32).state_dict())
    expected = {
        "in_proj.weight",
        "out_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
        "conv1d_b.weight",
        "conv1d_b.bias",
        "x_proj_b.weight",
        "dt_proj_b.weight",
        "dt_proj_b.bias",
        "A_b_log",
        "D_b",
    }
    assert names == expected
    assert set(Mamba(32, bidirectional=False).state_dict()) == {n for n in expected if "_b" not in n}


def test_initialisation_as_mamba_ssm():
    torch.manual_seed(0)
    mixer = Mamba(64, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4)
    assert mixer.dt_rank == math.ceil(64 / 16)
    assert mixer.x_proj.weight.shape == (mixer.dt_rank + 32, 128)
    for a_log, d in ((mixer.A_log, mixer.D), (mixer.A_b_log, mixer.D_b)):
        assert torch.allclose(a_log, torch.log(torch.arange(1, 17.0)).expand(128, 16))
        assert torch.equal(d, torch.ones(128))
        assert a_log._no_weight_decay and d._no_weight_decay
    for dt_proj in (mixer.dt_proj, mixer.dt_proj_b):
        dt = F.softplus(dt_proj.bias)
        assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
        bound = mixer.dt_rank**-0.5
        assert dt_proj.weight.abs().max() <= bound
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None and mixer.conv1d.bias is not None


def _swap_direction(key: str) -> str:
    for fwd, bwd in DIRECTION_PARAMS:
        for a, b in ((fwd, bwd), (bwd, fwd)):
            if key == a or key.startswith(a + "."):
                return b + key[len(a) :]
    return key


def test_backward_direction_runs_on_flipped_x_and_z():
    """Swapping the two directions' parameters and reversing time must reverse the output."""
    mixer = _mixer()
    swapped = Mamba(16).eval()
    swapped.load_state_dict({_swap_direction(k): v for k, v in mixer.state_dict().items()})
    x = torch.randn(2, 19, 16)
    assert torch.allclose(swapped(x.flip(1)).flip(1), mixer(x), atol=1e-5)
    assert not torch.allclose(mixer(x.flip(1)).flip(1), mixer(x), atol=1e-3)


def test_divide_out_halves_the_sum():
    mixer = _mixer()
    summed = _shared_copy(mixer, divide_out=False)
    x = torch.randn(1, 9, 16)
    # out_proj has no bias, so the output is linear in y: summing doubles it
    assert torch.allclose(summed(x), 2 * mixer(x), atol=1e-5)


@pytest.mark.parametrize("length", [3, 4])
def test_single_block_equals_full_bidirectional(length):
    mixer = _mixer()
    x = torch.randn(2, length, 16)
    assert torch.allclose(mixer(x, ScanMode(4)), mixer(x), atol=1e-6)


@pytest.mark.parametrize("block,ahead", [(4, 0), (4, 2), (5, 3), (1, 0)])
def test_backward_sees_only_its_block_and_lookahead(block, ahead):
    mixer = _mixer()
    mode = ScanMode(block, ahead)
    length = 4 * block + 3
    x = torch.randn(1, length, 16)
    base = mixer(x, mode)
    for k in range(length // block - 1):
        end = (k + 1) * block + ahead  # first token block k does not see
        if end < length:
            changed = x.clone()
            changed[:, end:] += 1.0
            assert torch.equal(mixer(changed, mode)[:, : (k + 1) * block], base[:, : (k + 1) * block])
        changed = x.clone()
        changed[:, end - 1] += 1.0  # the last token block k sees (its own or look-ahead)
        assert not torch.allclose(
            mixer(changed, mode)[:, k * block : (k + 1) * block], base[:, k * block : (k + 1) * block]
        )


@pytest.mark.skipif(not native_scan_available(), reason="no C++ compiler or ninja: no native scan")
@pytest.mark.parametrize("length,block", [(37, 8), (16, 8), (5, 8), (9, 1), (30, 4)])
def test_blocks_in_time_order_equal_cut_out_windows(length, block):
    """The native in-place backward blocks (CPU training's path) against windows cut out, flipped and
    scanned by the reference: the same output and the same gradients for the input and every parameter."""
    mixer = _mixer()
    x = torch.randn(2, length, 16, requires_grad=True)
    results = {}
    for scan in ("native", "ref"):
        assert Mamba._blocks_in_time_order(x, ScanMode(block, scan=scan)) == (scan == "native")
        y = mixer(x, ScanMode(block, scan=scan))
        results[scan] = (y, torch.autograd.grad((y * y.cos()).sum(), [x, *mixer.parameters()]))
    (y, grads), (want, want_grads) = results["native"], results["ref"]
    assert torch.allclose(y, want, atol=1e-6, rtol=1e-5)
    for got, expected in zip(grads, want_grads, strict=True):
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("block,chunk", [(4, 4), (4, 12), (2, 6), (8, 8)])
def test_forward_chunk_equals_offline(block, chunk):
    mixer = _mixer()
    mode = ScanMode(block)
    x = torch.randn(3, 48, 16)
    state = mixer.init_state(3)
    outputs = []
    for piece in x.split(chunk, dim=1):
        out, state = mixer.forward_chunk(piece, state, mode)
        outputs.append(out)
    assert torch.allclose(torch.cat(outputs, dim=1), mixer(x, mode), atol=1e-5)


@pytest.mark.parametrize("length", [17, 41, 64])
@pytest.mark.parametrize("scan", ["native", "chunked"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_offline_inference_in_time_chunks_equals_whole_input(monkeypatch, length, scan, bidirectional):
    """Long CPU inference runs a layer chunk by chunk in both directions: the output must not change."""
    monkeypatch.setattr(mamba_module, "TIME_CHUNK", 8)
    mixer = _mixer(bidirectional=bidirectional)
    mode = ScanMode(scan=scan)
    x = torch.randn(2, length, 16)
    whole = mixer(x, mode)  # gradients enabled: the whole-input path
    with torch.no_grad():
        assert mixer._runs_in_time_chunks(x, mode)
        chunked = mixer(x, mode)
    assert not mixer._runs_in_time_chunks(x, mode)
    assert torch.allclose(chunked, whole, atol=1e-5)
    with torch.no_grad():
        assert not mixer._runs_in_time_chunks(x, ScanMode(4, scan=scan))  # blocks: the streaming path


@pytest.mark.parametrize("time_chunk", [8, 10**9])
def test_reversed_time_equals_flipping_around_the_layer(monkeypatch, time_chunk):
    """SSAMBA's second layer of a pair sees the time-reversed input: swapping the directions' roles
    must give exactly that, in whole-input and chunked inference alike."""
    monkeypatch.setattr(mamba_module, "TIME_CHUNK", time_chunk)
    mixer = _mixer()
    x = torch.randn(2, 37, 16)
    with torch.no_grad():
        flipped = mixer(x.flip(1)).flip(1)
        assert torch.allclose(mixer(x, reversed_time=True), flipped, atol=1e-5)
        assert not torch.allclose(mixer(x), flipped, atol=1e-3)
    with pytest.raises(ValueError, match="reversed_time"):
        mixer(x, ScanMode(4), reversed_time=True)
    with pytest.raises(ValueError, match="reversed_time"):
        _mixer(bidirectional=False)(x, reversed_time=True)


def test_one_mixer_serves_several_block_sizes_at_once():
    """The block size is the call's: calls at other sizes in between change nothing."""
    mixer = _mixer()
    x = torch.randn(2, 24, 16)
    at_four = mixer(x, ScanMode(4))
    assert not torch.allclose(mixer(x, ScanMode(8)), at_four, atol=1e-4)
    assert torch.equal(mixer(x, ScanMode(4)), at_four)
    assert torch.allclose(mixer(x, ScanMode(4, scan="ref")), at_four, atol=1e-5)
    assert torch.allclose(mixer(x, ScanMode(4, scan="unrolled")), at_four, atol=1e-5)
    assert not hasattr(mixer, "backward_block") and not hasattr(mixer, "scan_fn")


def test_state_is_declared_by_the_mixer():
    mixer = Mamba(16, d_state=8, d_conv=3, expand=3)
    assert mixer.state_shapes() == {"conv_state": (48, 2), "ssm_state": (48, 8)}
    state = mixer.init_state(5)
    assert [tuple(t.shape) for t in state] == [(5, 48, 2), (5, 48, 8)]


def test_unidirectional_token_steps_equal_offline():
    mixer = _mixer(bidirectional=False)
    x = torch.randn(2, 17, 16)
    state = mixer.init_state(2)
    steps = []
    for t in range(x.shape[1]):
        out, state = mixer.forward_chunk(x[:, t : t + 1], state, ScanMode())
        steps.append(out)
    assert torch.allclose(torch.cat(steps, dim=1), mixer(x), atol=1e-5)
    assert state.conv.shape == (2, 32, 3) and state.ssm.shape == (2, 32, 16)
    # The last d_conv - 1 conv inputs; equal up to rounding (in_proj over 1 token and over 17 may round apart).
    assert torch.allclose(state.conv, mixer._split(x)[0][..., -3:], rtol=0, atol=1e-6)


def test_streaming_refuses_what_cannot_stream():
    mixer = _mixer()
    with pytest.raises(ValueError, match="backward block"):
        mixer.forward_chunk(torch.randn(1, 4, 16), mixer.init_state(1), ScanMode())
    with pytest.raises(ValueError, match="multiple of the backward block"):
        mixer.forward_chunk(torch.randn(1, 6, 16), mixer.init_state(1), ScanMode(4))
    with pytest.raises(ValueError, match="lookahead=0"):
        mixer.forward_chunk(torch.randn(1, 4, 16), mixer.init_state(1), ScanMode(4, 2))
    with pytest.raises(ValueError, match="backward block too"):
        ScanMode(None, 2)
    with pytest.raises(ValueError, match="positive number of tokens"):
        ScanMode(0)
    with pytest.raises(ValueError, match="unknown scan form"):
        ScanMode(4, scan="fast")


def test_gradients_flow_to_both_directions():
    mixer = Mamba(16).train()
    mixer(torch.randn(2, 10, 16), ScanMode(4)).square().mean().backward()
    for name in ("A_log", "A_b_log", "conv1d.weight", "conv1d_b.weight", "dt_proj_b.bias"):
        grad = mixer.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
