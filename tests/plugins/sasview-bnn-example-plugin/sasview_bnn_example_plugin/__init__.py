"""Example sasview-bnn plugin (see plugin.py)."""
