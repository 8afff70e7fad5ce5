"""Command-line entry points of the trainer (config stops here: they translate it into typed args)."""
