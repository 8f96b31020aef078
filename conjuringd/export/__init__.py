"""Exports of a custom/ folder to other JupyterHub deployments (conjuringctl export)."""
