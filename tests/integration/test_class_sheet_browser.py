"""CLASS.html and REPORT.html in headless Chromium (Debian's, through Playwright).

- Every QR code of the rendered class sheet is read back by an independent decoder (zbar-tools'
  zbarimg) from a screenshot: exactly the Wi-Fi join string, the address and each student's login
  URL; a Wi-Fi name and passphrase full of ; , : \\ and " come back intact.
- Screenshots for a person to look at (their paths are printed; kept in /tmp/conjuring-screenshots/):
  the sheet on screen and as printed, and two reports. Printing gives exactly the expected pages on A4
  and on US Letter, no page's content overflows, every slip is on screen, nothing is fetched, and a
  hostile file name in the report stays text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conjuringd.config.problems import error, warning
from conjuringd.merge import MergeSummary
from conjuringd.qr import wifi_payload
from conjuringd.reconcile.model import ImportOutcome, ReportFacts
from conjuringd.sheet import ClassSheet, Login, Wifi, page_count, render_class_sheet
from conjuringd.sticks.enrol import EnrolledStick, Verdict
from conjuringd.sticks.report import StickReport
from conjuringd.sticks.stickfiles import render_files
from tests.support.pages import browser, decode_qr, open_file, parse_wifi, pdf_pages, screenshot

SSID = 'Room;5,b:"x"\\'  # 13 bytes: every character the Wi-Fi format escapes
PASSPHRASE = 'p;a,s:s\\w"rd 42'
ADDRESS = "http://conjuring.local:8989"
HOSTILE = '<script>document.title="owned"</script><img src=x onerror="document.title=1">'


def class_sheet(n: int) -> ClassSheet:
    logins = tuple(Login(f"student{i:02d}", f"pw{i:02d}-kmnp-qrst") for i in range(1, n + 1))
    return ClassSheet(ADDRESS, Wifi(SSID, PASSPHRASE, own=True), (*logins, Login("teacher", "T-4ch3r;pw", True)),
                      "nuc-7", "2026-12-02T06:00:00Z")


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


def watch(page) -> dict:
    """What a page asks for beyond its own file, and whether anything ran in it."""
    seen = {"requests": [], "dialogs": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    return seen


def test_every_qr_code_decodes_to_exactly_what_it_should(chromium, tmp_path):
    sheet = class_sheet(23)
    path = tmp_path / "CLASS.html"
    path.write_text(render_class_sheet(sheet))
    page = open_file(chromium, path, scale=2)
    png = screenshot(page, "class-sheet-qr-decode.png")
    codes = decode_qr(png)
    expected = [wifi_payload(SSID, PASSPHRASE), ADDRESS, *(sheet.login_url(x) for x in sheet.logins)]
    assert sorted(codes) == sorted(expected)
    assert len(codes) == 2 + 24
    wifi = parse_wifi(next(c for c in codes if c.startswith("WIFI:")))
    assert wifi == {"T": "WPA", "S": SSID, "P": PASSPHRASE}
    assert f"{ADDRESS}/hub/login?username=student07" in codes and f"{ADDRESS}/hub/login?username=teacher" in codes


def _layout(page) -> dict:
    return page.evaluate("""() => ({
        pages: [...document.querySelectorAll('.page')].map(p => ({h: p.clientHeight, sh: p.scrollHeight,
                                                                 w: p.clientWidth, sw: p.scrollWidth})),
        slips: [...document.querySelectorAll('.slip')].filter(s => s.getBoundingClientRect().height > 0
                 && s.scrollHeight <= s.clientHeight + 1).length,
        title: document.title,
    })""")


def test_class_sheet_screenshots_and_print_layout(chromium, tmp_path):
    sheet = class_sheet(29)  # 30 slips: 3 full pages
    path = tmp_path / "CLASS.html"
    path.write_text(render_class_sheet(sheet))
    page = open_file(chromium, path, scale=1)
    seen = watch(page)
    page.reload()
    screenshot(page, "class-sheet-screen.png")
    layout = _layout(page)
    assert len(layout["pages"]) == page_count(sheet) == 4
    assert all(p["sh"] <= p["h"] + 1 and p["sw"] <= p["w"] + 1 for p in layout["pages"]), layout["pages"]
    assert layout["slips"] == 30  # every slip shown whole
    printed = open_file(chromium, path, scale=1, media="print", width_mm=190)
    screenshot(printed, "class-sheet-print-a4.png")
    assert all(p["sh"] <= p["h"] + 1 for p in _layout(printed)["pages"])
    assert pdf_pages(page, "A4") == 4 and pdf_pages(page, "Letter") == 4
    assert [u for u in seen["requests"] if not u.startswith("file://")] == [] and seen["dialogs"] == []


def _report(outcome: ImportOutcome, facts: ReportFacts | None, **kw) -> StickReport:
    return StickReport("2026-12-02T06:00:00Z", "nuc-7", "/dev/sdb1", kw.pop("label", "CONJURING"), "1234-ABCD",
                       outcome, facts, **kw)


def test_report_screenshots_applied_and_hostile(chromium, tmp_path):
    facts = ReportFacts("serving", ("http://10.42.0.1:8989",), 24, 1, ("image built (layers: apt, requirements)",
                        "hub container replaced (restart)"), active_config="a" * 64, active_source="stick CONJURING",
                        address=ADDRESS, students_online=18, students_recent=11, seconds=84, sheet=class_sheet(3))
    enrolled = Verdict("enrolled", stick=EnrolledStick("0123456789abcdef", "1234-ABCD"))
    merge = MergeSummary(complete=False, added=("apt.txt",), replaced=("requirements.txt",), kept=("users.csv",))
    applied = dict(render_files(_report(ImportOutcome("applied", "a" * 64, merge=merge), facts,
                                        enrolment="This stick is enrolled on this box."), enrolled))
    (tmp_path / "REPORT.html").write_bytes(applied["REPORT.html"])
    (tmp_path / "CLASS.html").write_bytes(applied["CLASS.html"])
    page = open_file(chromium, tmp_path / "REPORT.html", width_mm=200, scale=1)
    screenshot(page, "report-applied.png")
    assert page.inner_text(".result").startswith("Done: the box now uses this stick's configuration.")
    page.click("text=CLASS.html")  # the link opens the sheet beside it
    assert page.url.endswith("/CLASS.html") and page.locator(".slip").count() == 4

    problems = (error(f"custom/{HOSTILE}.txt", 3, f"unknown package '{HOSTILE}'"),
                error("custom/users.csv", 7, "duplicate user 'jane' (first on line 3)"),
                warning("custom/environment.yml", 0, "no channels: conda-forge is used"))
    invalid = dict(render_files(_report(ImportOutcome("invalid", problems=problems), facts, label=HOSTILE,
                                        refusals=(f"shared/{HOSTILE}: a symbolic link, skipped",)), enrolled))
    assert "CLASS.html" not in invalid
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "REPORT.html").write_bytes(invalid["REPORT.html"])
    page = open_file(chromium, tmp_path / "bad" / "REPORT.html", width_mm=200, scale=1)
    seen = watch(page)
    page.reload()
    screenshot(page, "report-invalid-hostile.png")
    assert page.title() == "Conjuring report" and seen["dialogs"] == []
    assert page.locator("script, img").count() == 0
    cells = page.locator("td.file").all_inner_texts()
    assert cells[0] == f"custom/{HOSTILE}.txt" and cells[1] == "custom/users.csv"  # shown as text, whole
    assert page.locator("tbody tr").nth(1).inner_text().split("\t")[:3] == ["custom/users.csv", "7", "error"]
    assert [u for u in seen["requests"] if not u.startswith("file://")] == []
    printed = pdf_pages(page, "A4")
    assert printed >= 1
