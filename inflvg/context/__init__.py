"""Context strategies: one interface (``ContextStrategy.select``) for baselines and the learned policy."""

from .base import ContextStrategy, SelectionState
from .baselines import STRATEGIES, make_strategy

__all__ = ["STRATEGIES", "ContextStrategy", "SelectionState", "make_strategy"]
