"""Rollout workers: a Ray actor holding the frozen generator and a replica of the selection
policy, producing GRPO groups of ``inflvg.rollout.Rollout`` records, and a thin group over N
replicas that spreads prompt sets, pushes versioned weights and re-issues a dead replica's work.

Importing this package imports neither Ray nor the generator; the group imports Ray when built.
"""
