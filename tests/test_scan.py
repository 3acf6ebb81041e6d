"""Selective scan: the chunked form and the CUDA kernel against the sequential reference."""

from __future__ import annotations

import pytest
import torch

import ssamba_stream.model.scan as scan_module
from ssamba_stream.model.scan import (
    DEFAULT_CHUNK_SIZE,
    cuda_scan_available,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
)

TOL = 1e-5


def _has_kernel() -> bool:
    return torch.cuda.is_available() and cuda_scan_available(torch.empty(0, device="cuda"))


needs_kernel = pytest.mark.skipif(not _has_kernel(), reason="needs CUDA and mamba-ssm")


def make_inputs(
    batch: int = 2,
    dim: int = 8,
    n: int = 4,
    length: int = 37,
    bc: str = "variable",
    groups: int = 2,
    dt: str = "normal",
    state: bool = False,
    extras: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Random scan inputs; ``dt`` picks the step-size regime ("normal", "huge", "tiny", "mixed")."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    A = -(torch.rand(dim, n, generator=g, dtype=dtype) + 0.5)  # in [-1.5, -0.5]
    if dt == "normal":
        delta = 0.2 * torch.rand(batch, dim, length, generator=g, dtype=dtype)
    elif dt == "huge":  # dt * A down to about -1e4 at every step
        delta = 6000 + 1000 * torch.rand(batch, dim, length, generator=g, dtype=dtype)
    elif dt == "tiny":
        delta = 1e-6 * torch.rand(batch, dim, length, generator=g, dtype=dtype)
    else:  # selective: mostly small steps, some channels/steps with dt * A ~ -1e4
        delta = 0.1 * torch.rand(batch, dim, length, generator=g, dtype=dtype)
        spikes = torch.rand(batch, dim, length, generator=g) < 0.2
        spikes[:, : dim // 2] = False  # half the channels keep full chunks
        spikes[:, -1, ::7] = True
        delta = torch.where(spikes, torch.full_like(delta, 7000.0), delta)
    shapes = {"variable": (batch, n, length), "grouped": (batch, groups, n, length), "fixed": (dim, n)}
    c_kind = {"mixed": "fixed"}.get(bc, bc)
    b_kind = {"mixed": "variable"}.get(bc, bc)
    return {
        "u": randn(batch, dim, length),
        "delta": delta,
        "A": A,
        "B": randn(*shapes[b_kind]),
        "C": randn(*shapes[c_kind]),
        "D": randn(dim) if extras else None,
        "z": randn(batch, dim, length) if extras else None,
        "delta_bias": 0.1 * randn(dim) if extras and dt == "normal" else None,
        "initial_state": randn(batch, dim, n) if state else None,
    }


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    """Max abs difference within tol, relative to the expected tensor's scale (at least 1)."""
    assert torch.isfinite(actual).all(), "non-finite values"
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} > {tol:g} * {scale:.3g}"


def run(fn, inputs, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return fn(**inputs, return_last_state=True, **kwargs)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("bc", ["variable", "grouped", "fixed", "mixed"])
@pytest.mark.parametrize("state", [False, True])
def test_chunked_matches_reference(length: int, bc: str, state: bool) -> None:
    inputs = make_inputs(length=length, bc=bc, state=state)
    out_ref, last_ref = run(selective_scan_ref, inputs)
    out, last = run(selective_scan_chunked, inputs)
    assert out.shape == out_ref.shape and out.is_contiguous()
    assert_close(out, out_ref)
    assert_close(last, last_ref)


@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("extras", [False, True])
def test_optional_terms(softplus: bool, extras: bool) -> None:
    inputs = make_inputs(length=70, extras=extras, state=True)
    out_ref, last_ref = run(selective_scan_ref, inputs, delta_softplus=softplus)
    out, last = run(selective_scan_chunked, inputs, delta_softplus=softplus)
    assert_close(out, out_ref)
    assert_close(last, last_ref)


@pytest.mark.parametrize("dt", ["huge", "tiny", "mixed"])
@pytest.mark.parametrize("length", [1, 45, 300])
def test_extreme_step_sizes(dt: str, length: int) -> None:
    inputs = make_inputs(length=length, dt=dt, state=True)
    if dt != "tiny":
        assert (inputs["delta"] * inputs["A"].min()).min() < -5000
    out_ref, last_ref = run(selective_scan_ref, inputs)
    out, last = run(selective_scan_chunked, inputs)
    assert_close(out, out_ref)
    assert_close(last, last_ref)


def test_large_steps_at_chunk_starts() -> None:
    """Chunks whose first step is huge and the rest small keep full length: no precision loss."""
    inputs = make_inputs(length=200, state=True, extras=False)
    inputs["delta"][..., ::DEFAULT_CHUNK_SIZE] = 3000.0
    out_ref, last_ref = run(selective_scan_ref, inputs)
    out, last = run(selective_scan_chunked, inputs)
    assert_close(out, out_ref)
    assert_close(last, last_ref)


@pytest.mark.parametrize("dt", ["normal", "mixed"])
def test_long_sequence(dt: str) -> None:
    inputs = make_inputs(batch=1, dim=6, n=4, length=4096, dt=dt, state=True)
    out_ref, last_ref = run(selective_scan_ref, inputs)
    out, last = run(selective_scan_chunked, inputs)
    assert_close(out, out_ref)
    assert_close(last, last_ref)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 64, 1000])
def test_chunk_size_does_not_change_results(chunk_size: int) -> None:
    inputs = make_inputs(length=150, bc="grouped", state=True)
    out_ref, last_ref = run(selective_scan_ref, inputs)
    out, last = run(selective_scan_chunked, inputs, chunk_size=chunk_size)
    assert_close(out, out_ref)
    assert_close(last, last_ref)


@pytest.mark.parametrize("tile_elems", [1, 2048])
def test_batch_rows_split_into_tiles(monkeypatch: pytest.MonkeyPatch, tile_elems: int) -> None:
    """Tiles of one row, and of two rows with a remainder, give the same values and gradients."""
    monkeypatch.setattr(scan_module, "_TILE_ELEMS", tile_elems)
    inputs = make_inputs(batch=3, length=70, state=True)
    leaves = [
        {k: (v.clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
        for _ in range(2)
    ]
    results = []
    for fn, args in zip((selective_scan_ref, selective_scan_chunked), leaves, strict=True):
        out, last = run(fn, args)
        (out.sum() + last.square().sum()).backward()
        results.append((out, last, [v.grad for v in args.values() if v is not None]))
    (out_ref, last_ref, grads_ref), (out, last, grads) = results
    assert_close(out, out_ref)
    assert_close(last, last_ref)
    for got, expected in zip(grads, grads_ref, strict=True):
        assert_close(got, expected)


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked])
@pytest.mark.parametrize("split", [1, 40, 99])
def test_two_halves_with_carried_state_equal_one_run(fn, split: int) -> None:
    """What streaming relies on: the last state of one part is the initial state of the next."""
    inputs = make_inputs(length=100, dt="mixed", state=True)
    full, full_last = run(fn, inputs)
    first = {
        k: (v[..., :split] if k in ("u", "delta", "z", "B", "C") and v is not None else v)
        for k, v in inputs.items()
    }
    second = {
        k: (v[..., split:] if k in ("u", "delta", "z", "B", "C") and v is not None else v)
        for k, v in inputs.items()
    }
    out1, state = run(fn, first)
    second["initial_state"] = state
    out2, last = run(fn, second)
    assert_close(torch.cat([out1, out2], dim=-1), full)
    assert_close(last, full_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    inputs = make_inputs(length=50, state=True, dtype=dtype)
    out, last = run(selective_scan_chunked, inputs)
    out_ref, last_ref = run(selective_scan_ref, inputs)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.dtype == dtype and last.dtype == compute
    assert_close(out, out_ref, tol=1e-12 if dtype == torch.float64 else 1e-2)
    assert_close(last, last_ref, tol=1e-12 if dtype == torch.float64 else TOL)


def test_dispatch_on_cpu() -> None:
    inputs = make_inputs(length=20, state=True)
    expected = run(selective_scan_ref, inputs)
    for impl in ("auto", "ref", "chunked"):
        got = selective_scan(**inputs, return_last_state=True, impl=impl)
        assert_close(got[0], expected[0])
        assert_close(got[1], expected[1])
    assert not cuda_scan_available(inputs["u"])
    without_state = {**inputs, "initial_state": None}
    with pytest.raises(RuntimeError, match="CUDA|mamba-ssm"):
        selective_scan(**without_state, impl="cuda")
    with pytest.raises(RuntimeError, match="initial_state"):
        selective_scan(**inputs, impl="cuda")
    with pytest.raises(ValueError, match="impl"):
        selective_scan(**inputs, impl="fast")


def test_kernel_dispatch_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a kernel available, auto and cuda call it with mamba-ssm's positional signature."""
    calls = []

    def fake_selective_scan_fn(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
    ):
        calls.append((A.dtype, D.dtype, delta_bias.dtype, B.dtype, delta_softplus, return_last_state))
        return selective_scan_ref(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, None, return_last_state
        )

    monkeypatch.setattr(scan_module, "_cuda_unsupported", lambda u, state: None)
    monkeypatch.setattr(scan_module, "_mamba_selective_scan_fn", lambda: fake_selective_scan_fn)
    inputs = make_inputs(length=20, dtype=torch.float64)
    expected = run(selective_scan_ref, inputs, delta_softplus=True)
    for impl in ("auto", "cuda"):
        got = selective_scan(**inputs, delta_softplus=True, return_last_state=True, impl=impl)
        assert_close(got[0], expected[0])
        assert_close(got[1], expected[1])
    assert calls == [(torch.float32, torch.float32, torch.float32, torch.float64, True, True)] * 2


@pytest.mark.parametrize(
    "name, value",
    [
        ("u", torch.zeros(2, 8)),
        ("delta", torch.zeros(2, 8, 36)),
        ("A", torch.zeros(7, 4)),
        ("B", torch.zeros(2, 4, 36)),
        ("B", torch.zeros(2, 3, 4, 37)),
        ("C", torch.zeros(8, 5)),
        ("D", torch.zeros(7)),
        ("z", torch.zeros(2, 8, 36)),
        ("delta_bias", torch.zeros(8, 1)),
        ("initial_state", torch.zeros(2, 8, 5)),
    ],
)
@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked, selective_scan])
def test_shape_validation(fn, name: str, value: torch.Tensor) -> None:
    inputs = make_inputs(length=37)
    inputs[name] = value
    with pytest.raises(ValueError, match=name if name != "u" else "u must"):
        fn(**inputs)


# --------------------------------------------------------------------------- gradients


def _grad_inputs(inputs: dict[str, torch.Tensor | None]) -> list[torch.Tensor]:
    return [v.requires_grad_() for v in inputs.values() if v is not None]


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked])
@pytest.mark.parametrize(
    "case",
    [
        dict(bc="variable", state=True),
        dict(bc="grouped", state=True, length=9),
        dict(bc="mixed", state=False),
        dict(bc="variable", state=True, dt="mixed", batch=1, length=6),
    ],
)
def test_gradcheck_float64(fn, case: dict) -> None:
    params = dict(batch=2, dim=4, n=3, length=7, dtype=torch.float64) | case
    inputs = make_inputs(**params)
    names = [k for k, v in inputs.items() if v is not None]
    softplus = params.get("dt", "normal") == "normal"
    kwargs = {"chunk_size": 4} if fn is selective_scan_chunked else {}

    def f(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fn(
            **dict(zip(names, tensors, strict=True)),
            delta_softplus=softplus,
            return_last_state=True,
            **kwargs,
        )

    assert torch.autograd.gradcheck(f, _grad_inputs(inputs), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dt", ["normal", "mixed", "huge", "tiny"])
def test_gradients_fp32_match_reference(dt: str) -> None:
    inputs = make_inputs(batch=2, dim=24, n=16, length=300, bc="grouped", groups=3, dt=dt, state=True)
    g = torch.Generator().manual_seed(1)
    grads = []
    for fn in (selective_scan_ref, selective_scan_chunked):
        leaves = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
        out, last = run(fn, leaves, delta_softplus=dt == "normal")
        g.manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g)).sum() + (
            last * torch.randn(last.shape, generator=g)
        ).sum()
        loss.backward()
        grads.append({k: v.grad for k, v in leaves.items() if v is not None})
    for name, expected in grads[0].items():
        assert torch.isfinite(grads[1][name]).all(), name
        assert_close(grads[1][name], expected)


# --------------------------------------------------------------------------- CUDA kernel


@needs_kernel
@pytest.mark.gpu
@pytest.mark.parametrize("bc", ["variable", "grouped"])
def test_cuda_kernel_matches_reference(bc: str) -> None:
    inputs = make_inputs(batch=2, dim=64, n=16, length=500, bc=bc)
    cuda = {k: (v.cuda() if v is not None else None) for k, v in inputs.items()}
    out_ref, last_ref = run(selective_scan_ref, inputs, delta_softplus=True)
    out, last = selective_scan(**cuda, delta_softplus=True, return_last_state=True, impl="cuda")
    auto = selective_scan(**cuda, delta_softplus=True, impl="auto")
    assert_close(out.cpu(), out_ref, tol=1e-4)
    assert_close(last.float().cpu(), last_ref, tol=1e-4)
    assert_close(auto.cpu(), out_ref, tol=1e-4)


@needs_kernel
@pytest.mark.gpu
def test_cuda_with_initial_state_falls_back_to_chunked() -> None:
    inputs = make_inputs(batch=2, dim=16, n=8, length=100, state=True)
    cuda = {k: (v.cuda() if v is not None else None) for k, v in inputs.items()}
    out_ref, last_ref = run(selective_scan_ref, inputs)
    out, last = selective_scan(**cuda, return_last_state=True)
    assert_close(out.cpu(), out_ref)
    assert_close(last.cpu(), last_ref)
