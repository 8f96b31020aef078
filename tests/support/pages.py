"""The box's HTML files in a real browser: Debian's chromium through Playwright, and QR codes read back
with an independent decoder (zbar-tools' zbarimg). Missing tools skip, or fail in CI."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--font-render-hinting=none"]
SCREENSHOTS = Path(os.environ.get("CONJURING_SCREENSHOTS", "/tmp/conjuring-screenshots"))
ZBAR_NS = "http://zbar.sourceforge.net/2008/barcode"
MM = 96 / 25.4  # CSS pixels per millimetre


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"required for CI: {reason}")
    pytest.skip(reason)


def require_tools() -> None:
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (.ci/install-deps.sh)")
    if shutil.which("zbarimg") is None:
        unavailable("zbarimg is missing: apt-get install zbar-tools (.ci/install-deps.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright is missing (tests/requirements.txt)")


@contextmanager
def browser():
    """One headless chromium for a test (or a module)."""
    require_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_file(b, path: Path, *, width_mm: float = 230, scale: float = 2, media: str = "screen"):
    """A page showing `path` (file://, offline: any request to the network fails the caller's checks)."""
    context = b.new_context(viewport={"width": round(width_mm * MM), "height": 900}, device_scale_factor=scale,
                            offline=True)
    page = context.new_page()
    page.emulate_media(media=media)
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page


def screenshot(page, name: str) -> Path:
    """A full-page PNG under SCREENSHOTS (a stable folder a person can look at); its path is printed."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / name
    page.screenshot(path=str(target), full_page=True)
    print(f"screenshot: {target}")
    return target


def pdf_pages(page, paper: str) -> int:
    """How many pages printing gives on `paper` ("A4" or "Letter"), as Chromium lays them out."""
    page.emulate_media(media="print")
    data = page.pdf(format=paper, prefer_css_page_size=False, print_background=True)
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def decode_qr(png: Path) -> list[str]:
    """Every QR code zbarimg finds in the image, as text, in zbar's order (its XML output: one element
    per code, so a code's text may hold any character)."""
    result = subprocess.run(["zbarimg", "--quiet", "--xml", "-Sdisable", "-Sqrcode.enable", str(png)],
                            capture_output=True, timeout=120)
    if result.returncode not in (0, 4):  # 4: no code found
        raise AssertionError(f"zbarimg failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    found = []
    for data in ElementTree.fromstring(result.stdout).iter(f"{{{ZBAR_NS}}}data"):
        text = data.text or ""
        found.append(base64.b64decode(text).decode("utf-8") if data.get("format") == "base64" else text)
    return found


def parse_wifi(text: str) -> dict[str, str]:
    """The fields of a `WIFI:` join string, unescaping backslashes (an independent reading of the format)."""
    assert text.startswith("WIFI:") and text.endswith(";;"), text
    fields, key, value, escaped, in_key = {}, "", "", False, True
    for ch in text[5:-1]:
        if escaped:
            value += ch
            escaped = False
        elif in_key:
            if ch == ":":
                in_key = False
            else:
                key += ch
        elif ch == "\\":
            escaped = True
        elif ch == ";":
            fields[key] = value
            key, value, in_key = "", "", True
        else:
            value += ch
    assert in_key and not key, f"unterminated field in {text!r}"
    return fields
