#!/usr/bin/env python3
"""Thin wrapper: ``python scripts/infer.py ARGS`` is ``tracefield infer ARGS``."""

import sys

from tracefield.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
