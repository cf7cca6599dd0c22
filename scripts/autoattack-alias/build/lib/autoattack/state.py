"""`autoattack.state` for robustbench 1.1.1: pyautoattack's evaluation state."""

from pyautoattack.state import EvaluationState

__all__ = ["EvaluationState"]
