"""The MPANet training loop: resumable, seeded, single-process or DDP under torchrun."""
