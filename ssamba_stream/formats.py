"""File-format constants and header readers shared by the torch side and the torch-free runtime."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, UserError, absence

CHECKPOINT_FORMAT = "ssamba-stream/checkpoint-v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def read_json_document(
    path: Path, fmt: str, what: str, error: type[UserError], missing: str, fix: str
) -> dict:
    """A JSON file that must hold ``{"format": fmt, ...}``; every failure is one ``error`` line."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path} is missing: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is corrupt ({exc}): {fix}") from None
    if not isinstance(document, dict) or document.get("format") != fmt:
        raise error(f"{path} is not {what} (expected format {fmt}): {fix}")
    return document


def read_checkpoint_document(directory: str | Path) -> dict:
    """The parsed config.json of a checkpoint directory, checked to be ours."""
    path = Path(directory)
    if not path.is_dir():
        hint = (
            " (an official SSAMBA .pth file? pass it to train.py --init-from, or to import_official in Python)"
            if path.suffix == ".pth"
            else ""
        )
        raise CheckpointError(
            f"checkpoint directory {path} {absence(path, directory=True)}{hint}: pass a checkpoint directory (config.json + model.safetensors, as training writes)"
        )
    return read_json_document(
        path / CONFIG_FILE,
        CHECKPOINT_FORMAT,
        "an ssamba-stream checkpoint config",
        CheckpointError,
        missing=f"{path} is not an ssamba-stream checkpoint",
        fix="re-save or re-export the checkpoint",
    )


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header, without loading the data (or torch)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete") from None
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError, ValueError):
        raise CheckpointError(
            f"{path} is corrupt (unreadable safetensors header): re-save the checkpoint"
        ) from None
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temp_path)`` beside ``path``, then rename the result over it: readers see the old
    file or the new one, never half of one, and a failure leaves the old file as it was."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(temp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
