"""Subcommands of ``edge-runtime``; see :mod:`edge_runtime.cli`."""
