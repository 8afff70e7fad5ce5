"""MPANet training: the network, its losses, datasets, evaluation protocols and the training loop.

Light by design: importing ``trainer`` imports neither torch nor numpy. ``trainer.common`` (modality
names, the config loader, atomic file writes) and ``trainer.synthetic`` (the procedural person
renderer) are the shared vocabulary that ``engines`` and ``edge`` may use; everything else here is
training code that ``edge`` never imports (checked by the import-linter contracts in CI).
"""
