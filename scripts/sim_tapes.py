"""Moved to ``scripts.sim.tapes`` (temporary alias while the simulator moves into ``scripts.sim``)."""

from scripts.sim.tapes import *
from scripts.sim.tapes import __all__  # noqa: F401
