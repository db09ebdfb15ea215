"""The hello-python example plugin (see plugin.py)."""
