"""Small exported models for runtime and CLI tests, made in the test session (no files in the repo)."""

from __future__ import annotations

KWS_LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_silence_", "_unknown_"]


def save_random_checkpoint(folder, labels: list[str], seed: int = 0, head_pool: str = "mean"):
    """A random-weight ssamba-kws checkpoint; its head is scaled up so that posteriors move
    (a random head gives near-uniform logits, and differences would not show), and an attention
    head gets random scores (zero ones would make it the mean)."""
    import torch

    from ssamba_stream.model.checkpoint import save_model
    from ssamba_stream.model.registry import build_model

    torch.manual_seed(seed)
    model = build_model(
        "ssamba-kws", num_classes=len(labels), labels=labels, head_window=25, head_pool=head_pool
    )
    with torch.no_grad():
        model.mlp_head[1].weight.mul_(20)
        if head_pool == "attention":
            model.head_attention.weight.normal_(std=1.0)
    return save_model(model, folder / "checkpoint")


def export_random_model(folder, labels: list[str], task: str = "kws", seed: int = 0):
    """``save_random_checkpoint`` exported to ONNX (fixed batch 1) as ``folder/<task>.onnx``."""
    from ssamba_export.onnx_export import export_onnx

    path = folder / f"{task}.onnx"
    export_onnx(save_random_checkpoint(folder, labels, seed), path, task=task)
    return path
