"""Open a ``snakemake --report`` page in headless Chromium: a PNG of its first screen, and the
text the page shows there.

    snakemake --report report.html
    python tools/report_screenshot.py report.html [--png report.png] [--size 1400x900]

Needs Chromium (Debian: ``apt-get install chromium``). Look at the PNG: the report's landing
page must state every experiment's findings without scrolling. Prints the landing page's
headline and experiment lines as the browser rendered them; exits 1 when the page rendered
no findings.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Offline and quiet: no network, no first-run dialogs, a throwaway profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
)


def chromium() -> str | None:
    """The Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def render(page: Path, png: Path | None, size: str = "1400x900") -> str:
    """The DOM of ``page`` after its scripts ran; a screenshot to ``png`` if given."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install chromium)")
    url = page.resolve().as_uri()
    width, height = size.split("x")
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        if png is not None:
            subprocess.run(
                [*base, f"--screenshot={png.resolve()}", url],
                check=True,
                capture_output=True,
                timeout=120,
            )
        dom = subprocess.run(
            [*base, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
        )
    return dom.stdout


def landing_text(dom: str) -> list[str]:
    """The rendered landing page's heading and list items, as plain text."""
    start = dom.find('<h1 class="title">')
    if start < 0:
        return []
    end = dom.find("</div>", start)
    block = dom[start:end]
    items = re.findall(r"<(?:h1|li|p)[^>]*>(.*?)(?=<(?:/?li|/p|/h1|ul)[ >])", block, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in items if t.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--png", type=Path, help="screenshot file (default: REPORT with .png)")
    ap.add_argument("--size", default="1400x900", help="browser window, WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    png = args.png or args.report.with_suffix(".png")
    lines = landing_text(render(args.report, png, args.size))
    for line in lines:
        print(line)
    print(f"screenshot: {png}")
    return 0 if lines and lines[0] == "Findings" else 1


if __name__ == "__main__":
    sys.exit(main())
