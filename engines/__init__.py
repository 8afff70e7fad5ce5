"""Deployable engines: export (ONNX), TensorRT plans, and one embedder runtime over the backends.

``engines.runtime`` and ``engines.sidecar`` are what the edge pipeline uses; they import neither
torch (at module level) nor training code. Export and engine building import ``trainer.model``.
"""
