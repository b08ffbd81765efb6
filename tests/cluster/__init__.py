"""Local control plane tooling (see controlplane.py)."""
