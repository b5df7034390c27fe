"""Reward actors: one Ray actor per reward family (alignment, identity, artifacts), batched scoring,
a replica group with a score cache and one retry, and the combined reward.

Importing this package imports neither Ray nor any model library; each actor imports its own.
"""
