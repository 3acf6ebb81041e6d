"""Layering and packaging: the runtime and CLI import no torch; the base install pulls no torch."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ssamba_stream.model.checkpoint import save_model
from ssamba_stream.model.registry import build_model

ROOT = Path(__file__).resolve().parents[1]

# Run in a child interpreter where any import of torch fails, as on a device without PyTorch.
BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_blocker_really_blocks_torch():
    result = _run_without_torch("import torch")
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_runtime_and_cli_import_without_torch():
    result = _run_without_torch(
        "import ssamba_stream, ssamba_stream.runtime, ssamba_stream.cli, ssamba_stream.formats\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\nprint('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_describes_a_checkpoint_without_torch(tmp_path):
    save_model(build_model("ssamba-kws", depth=2, num_classes=2, labels=["yes", "no"]), tmp_path / "ckpt")
    code = "import sys; from ssamba_stream.cli import main; sys.argv = ['ssamba-stream', 'info', sys.argv[1]]; main()"
    result = _run_without_torch(code, str(tmp_path / "ckpt"))
    assert result.returncode == 0, result.stderr
    assert "block-local, 8 tokens" in result.stdout and "labels: yes, no" in result.stdout
    params = sum(p.numel() for p in build_model("ssamba-kws", depth=2, num_classes=2).parameters())
    assert f"({params:,} parameters" in result.stdout


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{oops")
    code = "import sys; from ssamba_stream.cli import main; sys.argv = ['ssamba-stream', 'info', sys.argv[1]]; main()"
    result = _run_without_torch(code, str(tmp_path / "broken"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json is corrupt" in lines[0]
    assert "Traceback" not in result.stderr


def test_base_install_does_not_require_torch():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.split(">")[0].split("=")[0].strip() == "torch" for dep in project["dependencies"])
    for extra in ("train", "export"):
        assert any(dep.startswith("torch") for dep in project["optional-dependencies"][extra])


def test_the_torch_backend_lives_outside_the_runtime_and_says_what_it_needs(random_kws_model):
    """The runtime imports neither torch nor the model package; asking a torch-free install for the
    torch backend is one line naming the extra, not a traceback."""
    imports = re.compile(r"^\s*(from|import) (torch|\.\.model|ssamba_stream\.model)\b", re.MULTILINE)
    assert not [
        p.name for p in (ROOT / "ssamba_stream" / "runtime").glob("*.py") if imports.search(p.read_text())
    ]
    code = (
        "from ssamba_stream.cli import main\n"
        "sys.argv = ['ssamba-stream', 'file', sys.argv[1], '--model', sys.argv[2], '--backend', 'torch']; main()"
    )
    result = _run_without_torch(code, str(ROOT / "examples" / "keywords.wav"), str(random_kws_model))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "ssamba-stream: error: the torch backend needs PyTorch: pip install 'ssamba-stream[export]'"
    ]


def test_package_data_ships_every_native_kernel_source():
    """The kernels compile on the user's machine from the installed sources: a .cpp or header left
    out of package-data would break that build only after installation."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "ssamba_stream"
    sources = [path.relative_to(package).as_posix() for path in (package / "model" / "csrc").iterdir()]
    assert sources
    unshipped = [s for s in sources if not any(fnmatch.fnmatch(s, p) for p in patterns["ssamba_stream"])]
    assert not unshipped
