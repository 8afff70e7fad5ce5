"""MPANet training: the network, its losses, datasets, evaluation protocols and the training loop.

Light by design: importing ``trainer`` imports neither torch nor numpy. ``trainer.synthetic`` (the
procedural person renderer) is what ``engines`` and ``edge`` may use of it; the shared vocabulary
(modality names, the config loader, atomic file writes, memory measurement) lives in the top-level
``common`` package. Everything else here is training code that ``edge`` never imports (checked by
the import-linter contracts in CI).
"""
