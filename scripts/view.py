#!/usr/bin/env python3
"""Thin wrapper: ``python scripts/view.py ARGS`` is ``tracefield view ARGS``."""

import sys

from tracefield.cli import main

if __name__ == "__main__":
    sys.exit(main(["view", *sys.argv[1:]]))
