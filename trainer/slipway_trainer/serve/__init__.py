"""The inference server: Open Inference Protocol v2, dynamic batching, metrics, drift."""
