"""Placeholder for the VM bootstrap entry point (the VM-side issue fills it in)."""

import sys


def main(argv=None):
    sys.stderr.write("gwms-bootstrap: not implemented yet\n")
    return 2
