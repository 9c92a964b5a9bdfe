"""Slipway's workloads: data preparation, training, tuning and serving.

Each workload runs as ``python -m slipway_trainer <step> --config FILE`` (DESIGN: the workload
contract). This package never imports kopf or kubernetes: it knows nothing of the control plane.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
