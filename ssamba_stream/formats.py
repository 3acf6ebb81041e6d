"""File-format constants and header readers shared by the torch side and the torch-free runtime."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import CheckpointError

CHECKPOINT_FORMAT = "ssamba-stream/checkpoint-v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def read_checkpoint_document(directory: str | Path) -> dict:
    """The parsed config.json of a checkpoint directory, checked to be ours."""
    path = Path(directory)
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        hint = " (an official SSAMBA .pth file? import it with import_official)" if path.suffix == ".pth" else ""
        raise CheckpointError(f"checkpoint directory {path} not found{hint}: pass a directory written by save_model")
    try:
        document = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{config_path} is missing: {path} is not an ssamba-stream checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is corrupt ({exc}): re-save or re-export the checkpoint") from None
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{config_path} is not an ssamba-stream checkpoint config (expected format {CHECKPOINT_FORMAT})"
        )
    return document


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
        raise CheckpointError(f"{path} is corrupt (unreadable safetensors header): re-save the checkpoint") from None
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}
