"""Phobos: the entry point that wires adapters, Redis and workers together (settings, CLI, processes)."""

__version__ = "0.1.0"
