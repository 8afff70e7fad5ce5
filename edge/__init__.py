"""The edge node: RGB / thermal sources -> person detection -> per-camera tracks -> embeddings -> ZeroMQ.

Light by design: ``import edge`` imports neither zmq, ultralytics nor torch. Each submodule imports
its heavy dependency itself (``edge.transport`` imports zmq, ``edge.detect.yolo`` ultralytics), so a
machine without them gets a clear error only where they are needed.
"""
