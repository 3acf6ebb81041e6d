"""ssamba_export.flops: FLOPs counted from an ONNX graph's real shapes, checked against hand counts."""

import numpy as np
import torch
from torch import nn

from ssamba_export import flops


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 6, kernel_size=5, stride=2, bias=False)  # (1, 1, 41) -> (1, 6, 19)
        self.proj = nn.Linear(19, 7, bias=False)  # MatMul (1, 6, 19) x (19, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.conv(x))  # (1, 6, 7)
        return torch.exp(h).reshape(-1, 42).sum(-1) + 1.0


def test_counts_match_hand_counts(tmp_path):
    path = tmp_path / "net.onnx"
    torch.onnx.export(Net(), (torch.zeros(1, 1, 41),), str(path), input_names=["x"], dynamo=False)
    counted = flops.graph_flops(path, {"x": np.zeros((1, 1, 41), np.float32)})
    assert counted["Conv"] == 2 * (6 * 19) * 5
    assert counted["MatMul"] == 2 * (6 * 7) * 19
    assert counted["Exp"] == 42
    assert counted["ReduceSum"] == 42
    assert counted["Add"] == 1
    assert "Reshape" not in counted


def test_measured_peak_is_a_plausible_rate():
    peak = flops.measured_peak_flops(1, size=256, seconds=0.2)
    assert 1e8 < peak < 1e13  # between a slow embedded core and far beyond any single CPU core
