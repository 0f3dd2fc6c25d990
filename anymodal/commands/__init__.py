"""Subcommands of the `anymodal` CLI, one module each, registered in anymodal/cli.py."""
