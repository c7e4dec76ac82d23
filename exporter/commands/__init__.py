"""Subcommands of ``edge-export``; see :mod:`exporter.cli`."""
