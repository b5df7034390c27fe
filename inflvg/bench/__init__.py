"""The benchmark of context strategies: ``python -m inflvg.bench``."""
