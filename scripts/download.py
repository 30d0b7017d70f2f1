#!/usr/bin/env python3
"""Thin wrapper: ``python scripts/download.py ARGS`` is ``tracefield download ARGS``."""

import sys

from tracefield.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
