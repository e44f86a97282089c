"""Fault injection for the alarm path: `make chaos` (python -m chaos.run [--short])."""
