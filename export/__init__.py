"""ssamba_export: builds the streaming step graph from a checkpoint and compiles it (ONNX, TensorRT)."""
