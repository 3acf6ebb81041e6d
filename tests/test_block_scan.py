"""The streaming step's channels-last block scan and its softplus, against the sequential reference."""

import pytest
import torch
import torch.nn.functional as F

from ssamba_stream.model.block_scan import block_scan, softplus
from ssamba_stream.model.scan import selective_scan_ref


def test_softplus_matches_torch_over_the_whole_range():
    x = torch.linspace(-60, 60, 100_001)
    assert torch.allclose(softplus(x), F.softplus(x), rtol=1e-6, atol=6e-8)  # 1 + exp(x) rounds in fp32
    assert torch.equal(softplus(torch.tensor([25.0, 1e4])), torch.tensor([25.0, 1e4]))
    assert softplus(torch.tensor([-1e4]))[0].item() == 0.0


@pytest.mark.parametrize("length", [1, 8, 13])
@pytest.mark.parametrize("dt_scale", [0.1, 1.0, 30.0])
def test_block_scan_equals_reference_per_group(length, dt_scale):
    """Each group (a direction in the mixer) is an independent selective scan with its own A, B, C, D."""
    g = torch.Generator().manual_seed(length)
    batch, groups, n, d = 2, 2, 4, 6
    u = torch.randn(batch, groups, length, d, generator=g)
    delta = F.softplus(torch.randn(batch, groups, length, d, generator=g) * dt_scale)
    A = -torch.rand(groups, n, d, generator=g) * 8 - 0.5
    B = torch.randn(batch, groups, length, n, generator=g)
    C = torch.randn(batch, groups, length, n, generator=g)
    D = torch.randn(groups, 1, d, generator=g)
    z = torch.randn(batch, groups, length, d, generator=g)
    h0 = torch.randn(batch, groups, n, d, generator=g)

    y, last = block_scan(u, delta, A, B, C, D, z, h0)

    for k in range(groups):
        u_k, delta_k, B_k, C_k, z_k = (t[:, k].transpose(1, 2) for t in (u, delta, B, C, z))  # (b, x, L)
        want_y, want_last = selective_scan_ref(
            u_k,
            delta_k,
            A[k].t(),
            B_k,
            C_k,
            D[k, 0],
            z=z_k,
            initial_state=h0[:, k].transpose(1, 2),
            return_last_state=True,
        )
        assert torch.allclose(y[:, k], want_y.transpose(1, 2), atol=1e-5, rtol=1e-5)
        assert torch.allclose(last[:, k], want_last.transpose(1, 2), atol=1e-5, rtol=1e-5)
