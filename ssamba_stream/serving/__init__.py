"""Serving many streams at once: the batching engine and the Wyoming wake-word server (design §10)."""
