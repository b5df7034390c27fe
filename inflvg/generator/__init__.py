"""The StoryWorld backend: model, KV cache, training contexts, training script, weights, and its protocol adapter (``backend.py``)."""
