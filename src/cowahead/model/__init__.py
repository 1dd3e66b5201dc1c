"""The reference model of Linux anonymous memory and its fault path."""

from .costs import CostModel
from .counters import Counters
from .kernel import Kernel, ModelBug

__all__ = ["CostModel", "Counters", "Kernel", "ModelBug"]
