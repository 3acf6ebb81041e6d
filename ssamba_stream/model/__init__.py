"""PyTorch model code (frontend, selective scan, Mamba mixer, SSAMBA encoder, checkpoints).

Imported by training and export, never by the runtime.
"""
