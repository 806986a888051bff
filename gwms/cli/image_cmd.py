"""Placeholder: filled in by its owner."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Nothing yet."""
