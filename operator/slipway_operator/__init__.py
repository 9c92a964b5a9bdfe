"""Slipway's control plane: the API models, the controllers, the backends and the ``slipway`` command.

This package never imports torch or ray; workloads run as ``python -m slipway_trainer`` processes.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
