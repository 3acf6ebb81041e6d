"""Export-graph scans (unrolled, pairwise-decay) against the sequential reference scan."""

import pytest
import torch

from ssamba_stream.model.graph_scan import GRAPH_SCANS
from ssamba_stream.model.scan import selective_scan_ref


def _inputs(length: int, dt_scale: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, d, n = 2, 6, 4
    return dict(
        u=torch.randn(b, d, length, generator=g),
        delta=torch.randn(b, d, length, generator=g) * dt_scale,
        A=-torch.rand(d, n, generator=g) * 8 - 0.5,
        B=torch.randn(b, n, length, generator=g),
        C=torch.randn(b, n, length, generator=g),
        D=torch.randn(d, generator=g),
        z=torch.randn(b, d, length, generator=g),
        delta_bias=torch.randn(d, generator=g),
    )


@pytest.mark.parametrize("form", sorted(GRAPH_SCANS))
@pytest.mark.parametrize("length", [1, 8, 23, 40])
@pytest.mark.parametrize("with_state", [False, True])
def test_graph_scans_match_reference(form, length, with_state):
    args = _inputs(length, 1.0)
    h0 = torch.randn(2, 6, 4) if with_state else None
    want, want_last = selective_scan_ref(
        **args, delta_softplus=True, initial_state=h0, return_last_state=True
    )
    got, got_last = GRAPH_SCANS[form](**args, delta_softplus=True, initial_state=h0, return_last_state=True)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got_last, want_last, atol=1e-5)


@pytest.mark.parametrize("form", sorted(GRAPH_SCANS))
def test_graph_scans_survive_extreme_decay(form):
    args = _inputs(24, 1.0, seed=1)
    args["delta"] = torch.full_like(args["delta"], 1250.0)  # dt * A down to about -1e4 per step
    want = selective_scan_ref(**args, delta_softplus=True)
    got = GRAPH_SCANS[form](**args, delta_softplus=True)
    # cumsum floors each step's decay at 1e-7: its error is relative to the state's scale
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() <= 1e-6 * want.abs().max() + 1e-5


@pytest.mark.parametrize("form", sorted(GRAPH_SCANS))
def test_graph_scans_take_grouped_b_and_c(form):
    """Two groups of channels with their own B and C: how the step graph runs both directions at once."""
    args = _inputs(8, 1.0, seed=2)
    g = torch.Generator().manual_seed(3)
    args["B"], args["C"] = (torch.randn(2, 2, 4, 8, generator=g) for _ in range(2))
    want = selective_scan_ref(**args, delta_softplus=True)
    got = GRAPH_SCANS[form](**args, delta_softplus=True)
    assert torch.allclose(got, want, atol=1e-5)
