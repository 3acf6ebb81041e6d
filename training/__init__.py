"""ssamba_training: self-supervised pretraining and fine-tuning of SSAMBA models."""
