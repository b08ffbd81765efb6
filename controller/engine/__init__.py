"""The engine: a short loop (engine.loop) over small owners of state — the view of Jobs and
pods, the running attempts, the outcomes owed, the cancellations and the claims."""

from controller.engine.loop import Engine

__all__ = ["Engine"]
