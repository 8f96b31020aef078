"""conjuringd: a classroom JupyterHub appliance driven by USB sticks."""

__version__ = "0.1.0"
