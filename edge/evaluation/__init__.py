"""Scoring the pipeline against ground truth: detection recall/precision, cross-modality linking
precision/recall and multi-camera IDF1 from the sightings logs and the published identity events.

Used by the pipeline's summary, the demo and the side-by-side video; nothing here runs in a node or
the linker's hot path.
"""
