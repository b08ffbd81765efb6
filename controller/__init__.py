"""The audiojob operator: turns rows of a libSQL job table into Kubernetes Jobs."""

__version__ = "0.1.0"
