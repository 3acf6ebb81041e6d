"""On-device streaming runtime (onnxruntime / TensorRT): numpy only, never torch.

The layering rule of the project: this package and the CLI import no torch, so that a device
install (`pip install ssamba-stream[cpu]` or `[gpu]`) runs without PyTorch. tests/test_packaging.py
enforces it by importing them in a process where importing torch fails.
"""
