"""The system-info example plugin (see plugin.py and probes.py)."""
