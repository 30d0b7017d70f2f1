"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by playwright.

A test module that imports this is skipped, saying how to get what is missing, where
playwright or Chromium is absent (CI installs Chromium with apt-get: see .ci/run).
"""

from __future__ import annotations

import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra) to run the browser test")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium: `apt-get install -y chromium` to run the browser test", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WAIT = 60.0  # seconds for anything the browser waits for
