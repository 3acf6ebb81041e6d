"""The native depthwise conv + SiLU: F.conv1d + F.silu in value and gradient, causal and in reversed blocks."""

import pytest
import torch
import torch.nn.functional as F

from ssamba_stream.model import native_scan
from ssamba_stream.model.native_conv import conv_silu_native

pytestmark = pytest.mark.skipif(
    not native_scan.native_kernels_built(),
    reason="no C++ compiler or ninja: the native kernels cannot be built",
)


def _causal(x, weight, bias):
    return F.silu(F.conv1d(F.pad(x, (weight.shape[-1] - 1, 0)), weight, bias, groups=x.shape[1]))


def _flipped_blocks(x, weight, bias, block):
    """Each block cut out, time-flipped, through the causal conv from zero history, flipped back."""
    parts = [
        _causal(x[..., s : s + block].flip(-1), weight, bias).flip(-1) for s in range(0, x.shape[-1], block)
    ]
    return torch.cat(parts, dim=-1)


def _layer_inputs(batch, dim, length, width, dtype=torch.float32, seed=0):
    """x as a Mamba layer hands it over: a (batch, d, L) view of (batch, L, 2d) in_proj rows."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(batch, length, 2 * dim, generator=g, dtype=dtype)
    x = rows[..., :dim].transpose(1, 2).detach().requires_grad_()
    weight = torch.randn(dim, 1, width, generator=g, dtype=dtype).requires_grad_()
    bias = torch.randn(dim, generator=g, dtype=dtype).requires_grad_()
    return x, weight, bias


def _value_and_grads(fn, x, weight, bias):
    out = fn(x, weight, bias)
    return out, torch.autograd.grad((out * torch.cos(out)).sum(), [x, weight, bias])


@pytest.mark.parametrize("batch,dim,length,width,block", [
    (2, 8, 37, 4, None), (1, 5, 2, 4, None), (3, 16, 70, 3, None),  # L < K - 1; odd width
    (2, 8, 37, 4, 8), (2, 8, 16, 4, 8), (1, 4, 5, 4, 8), (2, 6, 9, 4, 1), (2, 8, 30, 2, 4),
])  # fmt: skip
def test_native_conv_equals_torch_in_value_and_gradient(batch, dim, length, width, block):
    x, weight, bias = _layer_inputs(batch, dim, length, width)
    want_fn = _causal if block is None else lambda *a: _flipped_blocks(*a, block)
    want, want_grads = _value_and_grads(want_fn, x, weight, bias)
    got, got_grads = _value_and_grads(lambda *a: conv_silu_native(*a, reversed_blocks=block), x, weight, bias)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    for name, g, w in zip(("x", "weight", "bias"), got_grads, want_grads, strict=True):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4), name


def test_native_conv_output_is_channels_last_and_takes_any_layout():
    """The result is a view of (batch, L, d) rows (what x_proj reads); a contiguous (batch, d, L) input
    gives the same values as the channels-last view of the same numbers."""
    x, weight, bias = _layer_inputs(2, 8, 21, 4)
    out = conv_silu_native(x, weight, bias)
    assert out.transpose(1, 2).is_contiguous()
    assert torch.equal(conv_silu_native(x.detach().contiguous(), weight, bias), out)


@pytest.mark.parametrize("block", [None, 3])
def test_native_conv_gradcheck_in_float64(block):
    x, weight, bias = _layer_inputs(1, 3, 7, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: conv_silu_native(*a, reversed_blocks=block), (x, weight, bias))


@pytest.mark.parametrize("length", [9, 2, 1])
def test_native_conv_continues_from_a_history_both_ways(length):
    """With the carried conv state: forward, the inputs before x; backward in time (one reversed
    block), the flipped input's state. Values and gradients, the history's included."""
    x, weight, bias = _layer_inputs(2, 6, length, 4)
    history = torch.randn(2, 6, 3, requires_grad=True)
    leaves = [x, weight, bias, history]
    cases = {
        "forward": (
            lambda: F.silu(F.conv1d(torch.cat([history, x], -1), weight, bias, groups=6)),
            lambda: conv_silu_native(x, weight, bias, history=history),
        ),
        "backward": (
            lambda: F.silu(F.conv1d(torch.cat([history, x.flip(-1)], -1), weight, bias, groups=6)).flip(-1),
            lambda: conv_silu_native(x, weight, bias, reversed_blocks=length, history=history),
        ),
    }
    for name, (want_fn, got_fn) in cases.items():
        want, got = want_fn(), got_fn()
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), name
        want_grads = torch.autograd.grad((want * want.cos()).sum(), leaves)
        got_grads = torch.autograd.grad((got * got.cos()).sum(), leaves)
        for g, w in zip(got_grads, want_grads, strict=True):
            assert torch.allclose(g, w, atol=1e-5, rtol=1e-4), name
