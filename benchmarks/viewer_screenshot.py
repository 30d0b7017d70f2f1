#!/usr/bin/env python3
"""Screenshot of the viewer in headless Chromium: ``docs/viewer.png`` in the README.

    python benchmarks/viewer_screenshot.py outputs/demo/synthetic --time 0.6 -o docs/viewer.png

Needs Debian's ``chromium`` and playwright (the test extra). The software renderer fades
new points in slowly, hence the wait before the picture.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viewer.app import Viewer, ViewerOptions, open_field  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("field", type=Path)
    parser.add_argument("--time", type=float, default=0.6)
    parser.add_argument("--wait", type=float, default=20.0, help="seconds for the software renderer to settle")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/viewer.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    field, folder = open_field(args.field)
    viewer = Viewer(field, folder, ViewerOptions(port=0))
    viewer.wait_idle(120)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 850})
        page.goto(viewer.url())
        page.wait_for_selector("canvas")
        viewer.controls.set_time(args.time)
        viewer.wait_idle(30)
        time.sleep(args.wait)
        close = page.locator("button.mantine-Notification-closeButton")  # the software-renderer warning
        for i in range(close.count()):
            close.nth(i).click()
        time.sleep(1)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        raw = args.output.with_suffix(".raw.png")
        page.screenshot(path=str(raw))
        browser.close()
    viewer.stop()
    Image.open(raw).convert("RGB").quantize(colors=255).save(args.output, optimize=True)
    raw.unlink()
    print(args.output)


if __name__ == "__main__":
    main()
