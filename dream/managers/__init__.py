"""Managers: what runs a deployment (the host supervisor today), and publishers: where a built
image goes (dream/managers/base.py says the two shapes)."""
