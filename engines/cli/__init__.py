"""Command lines of the engines: ``mpanet-export``, ``mpanet-build-engine``, ``mpanet-compress``, ``mpanet-eval``."""
