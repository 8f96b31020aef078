"""The frame of the HTML files the box writes (CLASS.html, REPORT.html): one self-contained page.

No external fonts, scripts or images, so a page opens offline on any laptop; every piece of text
goes through `esc` (stick file names and problems are attacker input). The Content-Security-Policy
forbids scripts and every fetch, as a second line of defence.
"""

from __future__ import annotations

import html

SANS = '"DejaVu Sans", "Segoe UI", "Helvetica Neue", Arial, sans-serif'
MONO = '"DejaVu Sans Mono", Consolas, Menlo, "Liberation Mono", "Courier New", monospace'
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

BASE_CSS = f"""
* {{ box-sizing: border-box; }}
html {{ -webkit-print-color-adjust: exact; print-color-adjust: exact; }}
body {{ margin: 0; font-family: {SANS}; color: #1b1b1b; background: #e9ecef; line-height: 1.35; }}
.mono {{ font-family: {MONO}; }}
h1, h2, h3 {{ margin: 0; line-height: 1.15; }}
a {{ color: #0b57d0; }}
@media print {{ body {{ background: #fff; }} .screen-only {{ display: none !important; }} }}
"""


def esc(text: object) -> str:
    """`text` as HTML text or attribute value: nothing in it can become markup."""
    return html.escape(str(text), quote=True)


def page(title: str, css: str, body: str) -> str:
    """A whole HTML document."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{BASE_CSS}{css}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


__all__ = ["MONO", "SANS", "esc", "page"]
