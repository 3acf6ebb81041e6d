"""benchmarks/efficiency.py: the --smoke run writes a parseable table, CSV and plots; the stop rule's maths."""

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "efficiency.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_script():
    spec = importlib.util.spec_from_file_location("efficiency_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_outputs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bench = _load_script()
    with open(tmp_path / "efficiency.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["model"], int(r["tokens"])) for r in rows} == {
        (m, t) for m in bench.MODELS for t in bench.SMOKE_TOKENS
    }
    for row in rows:
        assert row["status"] == "ok", row
        assert float(row["median_s"]) > 0 and len(row["runs_s"].split(";")) == 2
        assert float(row["peak_mib"]) >= float(row["static_mib"]) > 0
        assert int(row["frames"]) == int(row["tokens"]) // 8 * 16
    table = (tmp_path / "efficiency.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| tokens"))
    data = [
        line for line in table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    ]
    assert len(data) == len(bench.SMOKE_TOKENS)
    assert all(len(line.split("|")) == len(header.split("|")) for line in data)
    assert "vs ssast-tiny-explicit: % faster" in header and "vs ssast-tiny-sdpa: % less memory" in header
    for name in ("time_vs_tokens.png", "memory_vs_tokens.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_lengths_and_extrapolation():
    bench = _load_script()
    assert bench.token_lengths(22528) == [512, 1024, 2048, 4096, 8192, 16384, 22528]
    assert bench.token_lengths(4096) == [512, 1024, 2048, 4096]
    assert bench.token_lengths(300) == []
    assert bench.extrapolate([512], [1.0], 1024) == pytest.approx(4.0)  # one point: assume quadratic
    assert bench.extrapolate([512, 1024], [1.0, 2.0], 2048) == pytest.approx(4.0)  # linear
    assert bench.extrapolate([512, 1024], [1.0, 1.1], 2048) == pytest.approx(2.2)  # never below linear
    assert bench.extrapolate([512, 1024], [1.0, 8.0], 2048) == pytest.approx(32.0)  # never above quadratic


@pytest.mark.parametrize(
    "budget_flags,measured,reason",
    [
        # 512: 1 s/run; 1024 predicted quadratic 4 s x 3 passes = 12 s; 2048 and 4096 linear from there
        (["--time-budget", "13"], [512, 1024, 2048], "stopped before 4096 tokens: predicted 24 s"),
        # 512: 1 MB; 1024 predicted quadratic 4 MB > 2.7 MB
        (["--memory-budget-gib", "0.0025"], [512], "stopped before 1024 tokens: predicted peak"),
    ],
)
def test_series_stops_before_a_point_over_budget(monkeypatch, budget_flags, measured, reason):
    bench = _load_script()
    args = bench.parse_args(["--runs", "2", "--warmup", "1", *budget_flags])
    calls = []

    def fake_point(spec, timeout_s):
        calls.append(spec["tokens"])
        return {"status": "ok", "median_s": spec["tokens"] / 512, "peak_bytes": 1e6 * spec["tokens"] / 512}

    monkeypatch.setattr(bench, "run_point", fake_point)
    series = bench.run_series("ssast-tiny-sdpa", [512, 1024, 2048, 4096], args, log=lambda _: None)
    assert calls == measured and series.stop_reason.startswith(reason)
