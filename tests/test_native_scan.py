"""Native CPU selective scan: equal to the sequential reference in value and gradient, and its fall-back."""

import subprocess
import sys
from functools import partial

import pytest
import torch

from ssamba_stream.model import native_scan
from ssamba_stream.model.scan import selective_scan, selective_scan_ref

pytestmark = pytest.mark.skipif(
    not native_scan.native_scan_available(),
    reason="no C++ compiler or ninja: the native scan cannot be built",
)


def _inputs(batch, dim, n, length, bc, with_state, with_z, with_d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    shapes = {"fixed": (dim, n), "variable": (batch, n, length), "grouped": (batch, 2, n, length)}
    return {
        "u": r(batch, dim, length),
        "delta": r(batch, dim, length, scale=0.5),
        "A": (-torch.rand(dim, n, generator=g, dtype=dtype) * 2).requires_grad_(),
        "B": r(*shapes[bc]),
        "C": r(*shapes[bc]),
        "D": r(dim) if with_d else None,
        "z": r(batch, dim, length) if with_z else None,
        "delta_bias": r(dim),
        "initial_state": r(batch, dim, n) if with_state else None,
    }


def _run(fn, args):
    out, last = fn(**args, delta_softplus=True, return_last_state=True)
    leaves = [t for t in args.values() if t is not None]
    grads = torch.autograd.grad((out * torch.cos(out)).sum() + last.square().sum(), leaves)
    return out, last, grads


def _flipped_reference(**kwargs):
    """The reference scan backward in time: out in time order, and the state after the first step."""
    flip = {
        k: v.flip(-1) if k in ("u", "delta", "B", "C", "z") and v is not None else v
        for k, v in kwargs.items()
    }
    out, last = selective_scan_ref(**flip)
    return out.flip(-1), last


def _channels_last_views(args, names=("u", "delta", "z")):
    """The named inputs as views whose last two dimensions are swapped in memory, as a Mamba layer
    passes them: u, delta, z (batch, d, L) of (batch, L, d) leaves, B, C of (batch, L, n) columns."""
    views = dict(args)
    for name in names:
        if args.get(name) is not None:
            leaf = args[name].detach().transpose(-1, -2).contiguous().requires_grad_()
            views[name] = leaf.transpose(-1, -2)
    return views


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize(
    "batch,dim,n,length,bc,with_state,with_z,with_d",
    [
        (1, 4, 3, 1, "variable", False, True, True),  # L = 1
        (2, 8, 4, 17, "variable", True, True, True),  # odd L, batch > 1, initial state
        (3, 8, 16, 33, "fixed", True, False, False),
        (2, 8, 4, 9, "grouped", False, True, True),
        (2, 6, 4, 64, "variable", False, False, True),
    ],
)
def test_native_equals_reference_in_value_and_gradient(batch, dim, n, length, bc, with_state, with_z, with_d):
    args = _inputs(batch, dim, n, length, bc, with_state, with_z, with_d)
    ref_out, ref_last, ref_grads = _run(selective_scan_ref, args)
    out, last, grads = _run(native_scan.selective_scan_native, args)
    assert _relative(out, ref_out) <= 1e-5 and _relative(last, ref_last) <= 1e-5
    for name, got, want in zip([k for k, v in args.items() if v is not None], grads, ref_grads, strict=True):
        assert _relative(got, want) <= 1e-4, name


@pytest.mark.parametrize("bc", ["variable", "grouped"])
def test_native_reads_channels_last_views_without_copies(bc):
    """u, delta, z as (batch, d, L) views of (batch, L, d) tensors and B/C as views of (batch, L, n)
    columns, the layouts a Mamba layer hands over: same values and gradients as contiguous inputs."""
    args = _inputs(2, 8, 4, 19, bc, True, True, True)
    views = _channels_last_views(args, ("u", "delta", "z", "B", "C"))
    assert not views["u"].is_contiguous() and views["B"].stride(-2) == 1
    want_out, want_last, want_grads = _run(selective_scan_ref, args)
    out, last, grads = _run(native_scan.selective_scan_native, views)
    assert _relative(out, want_out) <= 1e-5 and _relative(last, want_last) <= 1e-5
    for name, got, want in zip([k for k, v in args.items() if v is not None], grads, want_grads, strict=True):
        assert _relative(got, want) <= 1e-4, name


@pytest.mark.parametrize(
    "batch,dim,n,length,blocks,with_state,with_z,with_d",
    [
        (2, 16, 16, 37, None, True, True, True),  # two groups of channels, the usual state size
        (1, 8, 5, 40, None, False, False, False),  # another state size, no gate, no skip
        (2, 8, 16, 21, 21, True, True, True),  # one block over the whole row, from a state
    ],
)
def test_channels_last_float_inputs_take_the_channel_vector_path(
    batch, dim, n, length, blocks, with_state, with_z, with_d
):
    """Channels-last float inputs run with channels in the vector lanes, forward and backward, and
    the output and the gradients of u, delta and z come back as views of channels-last tensors:
    same values and gradients as the reference (blocks: test_reversed_blocks_equal_flipped_windows)."""
    args = _inputs(batch, dim, n, length, "variable", with_state, with_z, with_d)
    reference = selective_scan_ref if blocks is None else _flipped_reference
    want_out, want_last, want_grads = _run(reference, args)
    scan = partial(native_scan.selective_scan_native, reversed_blocks=blocks)
    out, last, grads = _run(scan, _channels_last_views(args))
    assert out.transpose(1, 2).is_contiguous(), "the channel-vector forward did not run"
    assert grads[0].transpose(1, 2).is_contiguous(), "the channel-vector backward did not run"
    assert _relative(out, want_out) <= 1e-5 and _relative(last, want_last) <= 1e-5
    names = [k for k, v in args.items() if v is not None]
    for name, got, want in zip(names, grads, want_grads, strict=True):
        assert _relative(got, want) <= 1e-4, name


def test_native_survives_huge_steps():
    args = _inputs(2, 4, 4, 12, "variable", True, False, True)
    with torch.no_grad():
        args["delta"].mul_(0).add_(1e4)  # exp(dt * A) underflows to 0: a state reset every step
    out, _, grads = _run(native_scan.selective_scan_native, args)
    ref_out, _, ref_grads = _run(selective_scan_ref, args)
    assert torch.isfinite(out).all() and _relative(out, ref_out) <= 1e-5
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_nan_step_size_stays_nan_where_the_reference_is(channels_last):
    """The kernel's exp and softplus clamp their arguments but let NaN through: a NaN in delta
    poisons the same outputs as in the reference scan, in the row and the channel-vector forms."""
    args = _inputs(2, 8, 16, 12, "variable", False, True, True)
    with torch.no_grad():
        args["delta"][1, 3, 5] = float("nan")
    inputs = _channels_last_views(args) if channels_last else args
    with torch.no_grad():
        want = selective_scan_ref(**args, delta_softplus=True)
        got = native_scan.selective_scan_native(**inputs, delta_softplus=True)
    assert torch.isnan(want).any()
    assert torch.equal(torch.isnan(got), torch.isnan(want))


def test_native_softplus_holds_over_the_whole_range():
    """The kernel's own softplus (no libm call) against torch's, from steps that vanish to huge ones."""
    args = _inputs(1, 4, 4, 801, "variable", False, True, True)
    with torch.no_grad():
        args["delta"].copy_(torch.linspace(-60, 60, 801).expand(1, 4, -1))
        args["delta_bias"].zero_()
    ref_out, ref_last, ref_grads = _run(selective_scan_ref, args)
    out, last, grads = _run(native_scan.selective_scan_native, args)
    assert _relative(out, ref_out) <= 1e-5 and _relative(last, ref_last) <= 1e-5
    delta_grad, want = grads[1], ref_grads[1]
    assert _relative(delta_grad, want) <= 1e-4


def test_gradcheck_in_float64():
    args = _inputs(1, 3, 2, 5, "variable", True, True, True, dtype=torch.float64)
    names = list(args)

    def fn(*values):
        kwargs = dict(zip(names, values, strict=True))
        return native_scan.selective_scan_native(**kwargs, delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(fn, tuple(args.values()))


def test_auto_picks_native_on_cpu():
    args = {
        k: (None if v is None else v.detach())
        for k, v in _inputs(2, 8, 4, 17, "variable", True, True, True).items()
    }
    auto = selective_scan(**args, delta_softplus=True, impl="auto")
    native = selective_scan(**args, delta_softplus=True, impl="native")
    assert torch.equal(auto, native)


def test_forced_fallback_warns_once_and_gives_the_chunked_result():
    """SSAMBA_NATIVE_SCAN=0 in a fresh interpreter: the chunked scan's result, one warning for two calls."""
    code = """
import warnings, torch
from ssamba_stream.model.native_scan import selective_scan_native
from ssamba_stream.model.scan import selective_scan_chunked
torch.manual_seed(0)
u, dt = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
A, B, C = -torch.rand(4, 3), torch.randn(2, 3, 9), torch.randn(2, 3, 9)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = selective_scan_native(u, dt, A, B, C, delta_softplus=True)
    second = selective_scan_native(u, dt, A, B, C, delta_softplus=True)
assert torch.equal(first, selective_scan_chunked(u, dt, A, B, C, delta_softplus=True))
assert torch.equal(first, second)
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(messages) == 1 and "SSAMBA_NATIVE_SCAN=0" in messages[0], messages
print("ok")
"""
    env = {**__import__("os").environ, native_scan.ENV_VAR: "0"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_native_rejects_cuda_style_misuse():
    args = {
        k: (None if v is None else v.detach())
        for k, v in _inputs(1, 4, 2, 3, "variable", False, False, False).items()
    }
    args["A"] = args["A"][:3]
    with pytest.raises(ValueError, match="A must be"):
        native_scan.selective_scan_native(**args)


def _blocks_flipped_through_reference(args, block):
    """The blocks cut out, time-flipped, scanned by the reference from zero state, put back."""
    length, parts = args["u"].shape[-1], []
    for start in range(0, length, block):
        window = slice(start, min(length, start + block))
        cut = {
            k: v[..., window].flip(-1) if k in ("u", "delta", "B", "C", "z") else v for k, v in args.items()
        }
        parts.append(selective_scan_ref(**cut, delta_softplus=True).flip(-1))
    return torch.cat(parts, dim=-1)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "batch,dim,n,length,block",
    [
        (2, 8, 4, 17, 8),
        (1, 4, 16, 5, 8),
        (2, 6, 4, 16, 1),
        (3, 8, 16, 33, 8),
        (2, 8, 5, 24, 3),
        (2, 16, 16, 37, 8),
    ],
)
def test_reversed_blocks_equal_flipped_windows_in_value_and_gradient(
    batch, dim, n, length, block, channels_last
):
    """The kernel's in-place block-local backward scan (L not a multiple of the block, L < block, block
    1), on (batch, d, L) rows and on the channels-last views a Mamba layer passes."""
    args = {
        k: v
        for k, v in _inputs(batch, dim, n, length, "variable", False, True, True).items()
        if v is not None
    }
    want = _blocks_flipped_through_reference(args, block)
    inputs = _channels_last_views(args) if channels_last else args
    got = native_scan.selective_scan_native(**inputs, delta_softplus=True, reversed_blocks=block)
    assert _relative(got, want) <= 1e-5
    want_grads = torch.autograd.grad((want * torch.cos(want)).sum(), list(args.values()))
    got_grads = torch.autograd.grad((got * torch.cos(got)).sum(), list(inputs.values()))
    if channels_last and dim % 8 == 0:  # whole groups of channels: the channel-vector form ran
        assert got.transpose(1, 2).is_contiguous() and got_grads[0].transpose(1, 2).is_contiguous()
    for name, g, w in zip(args, got_grads, want_grads, strict=True):
        assert _relative(g, w) <= 1e-4, name


def test_reversed_blocks_gradcheck_in_float64():
    args = {
        k: v
        for k, v in _inputs(1, 3, 2, 7, "variable", False, True, True, torch.float64).items()
        if v is not None
    }
    names = list(args)

    def fn(*values):
        return native_scan.selective_scan_native(
            **dict(zip(names, values, strict=True)), delta_softplus=True, reversed_blocks=3
        )

    assert torch.autograd.gradcheck(fn, tuple(args.values()))


def test_reversed_blocks_take_an_initial_state_only_as_one_block():
    """One block over the whole input is the input scanned backward in time, from any state: the
    time-flipped reference, final state and the initial state's gradient included."""
    args = {k: v for k, v in _inputs(2, 4, 3, 7, "variable", True, True, True).items() if v is not None}
    with pytest.raises(ValueError, match="one block over the whole input"):
        native_scan.selective_scan_native(**{k: v.detach() for k, v in args.items()}, reversed_blocks=4)

    want, want_last, want_grads = _run(_flipped_reference, args)
    got, got_last, got_grads = _run(partial(native_scan.selective_scan_native, reversed_blocks=7), args)
    assert _relative(got, want) <= 1e-5 and _relative(got_last, want_last) <= 1e-5
    for name, g, w in zip(args, got_grads, want_grads, strict=True):
        assert _relative(g, w) <= 1e-4, name
