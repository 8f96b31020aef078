"""CLASS.html and REPORT.html onto sticks, with the real conjuringd process, a real systemd-udevd and
loop-device sticks (ext4 and FAT).

An enrolled stick whose configuration is applied receives CLASS.html (every account and password,
QR codes that decode to the box's address) and REPORT.html linking to it. A stick the box has not
enrolled receives neither a password nor CLASS.html: not a stranger on an enrolling box, and not
any stick while `[usb] trust = "any"`. `conjuringctl sheet` writes the same sheet on the box, 0600.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conjuringd.urls import login_url
from tests.integration.test_usb_enrol import exists, insert, make_stick, new_box, read, stick_tree
from tests.support.pages import browser, decode_qr, open_file, screenshot
from tests.support.udev import loops, udevd

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]

FS = ("ext4", "vfat")
NAME = re.compile(r'<p class="value mono name">([^<]*)</p><p class="label">Password</p>'
                  r'<p class="value mono password">([^<]*)</p>')


def made_passwords(box) -> dict[str, str]:
    return json.loads((box.state_dir / "secrets" / "generated-passwords.json").read_text())


def slips(html: str) -> dict[str, str]:
    return dict(NAME.findall(html))


def every_password(box, student: str) -> list[bytes]:
    return [p.encode() for p in (*made_passwords(box).values(), f"pw-{student}-123456")]


@pytest.mark.parametrize("fs", FS)
def test_enrolled_stick_gets_the_sheet_and_a_stranger_gets_no_password(tmp_path, udevd, loops, fs):
    box = new_box(tmp_path / "box")
    try:
        box.start()
        box.wait_event("converged")
        teacher = make_stick(fs, tmp_path / f"usb-teacher-{fs}.img", stick_tree(tmp_path / "t", "ana"), "TEACHER")
        insert(box, loops, teacher, reports=1)
        status = box.wait_status(lambda s: s.get("active_config") == box.state()["active"] and s.get("address"))
        address = status["address"]
        assert address == status["hub_urls"][0]  # no name published here (--network none): the IP address
        html = read(fs, teacher, "conjuring/CLASS.html").decode()
        made = made_passwords(box)
        assert slips(html) == {**{n: made[n] for n in ("student1", "student2")}, "ana": "pw-ana-123456",
                               "teacher": made["teacher"]}
        report = read(fs, teacher, "conjuring/REPORT.html").decode()
        assert '<a href="CLASS.html">CLASS.html</a>' in report and address in report and "Done:" in report
        assert "APPLIED" in read(fs, teacher, "conjuring/REPORT.txt").decode()
        _decode_the_sticks_sheet(tmp_path, html, address, fs)

        stranger = make_stick(fs, tmp_path / f"usb-student-{fs}.img", stick_tree(tmp_path / "s", "eve"), "STUDENT")
        insert(box, loops, stranger, reports=2)
        assert not exists(fs, stranger, "conjuring/CLASS.html")
        on_stick = read(fs, stranger, "conjuring/REPORT.txt") + read(fs, stranger, "conjuring/REPORT.html")
        assert b"not enrolled" in on_stick and b"conjuringctl enroll" in on_stick
        assert not [p for p in every_password(box, "ana") if p in on_stick]
        assert address.encode() not in on_stick
        _the_box_writes_the_same_sheet(box, tmp_path, html)
    finally:
        box.close()


def _decode_the_sticks_sheet(tmp_path: Path, html: str, address: str, fs: str) -> None:
    path = tmp_path / "from-stick" / "CLASS.html"
    path.parent.mkdir()
    path.write_text(html)
    with browser() as b:
        png = screenshot(open_file(b, path, scale=2), f"class-sheet-from-{fs}-stick.png")
        codes = decode_qr(png)
    assert sorted(codes) == sorted([address, *(login_url(address, n) for n in slips(html))])


def _the_box_writes_the_same_sheet(box, tmp_path: Path, html: str) -> None:
    target = tmp_path / "class-sheet.html"
    result = box.ctl("sheet", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert oct(os.stat(target).st_mode & 0o777) == "0o600" and "4 slips" in result.stderr
    assert slips(target.read_text()) == slips(html)
    assert re.sub(r" at [0-9TZ:-]+\.", "", target.read_text()) == re.sub(r" at [0-9TZ:-]+\.", "", html)


def test_trust_any_gives_no_passwords_to_a_stick_that_is_not_enrolled(tmp_path, udevd, loops):
    box = new_box(tmp_path / "box", trust="any")
    try:
        box.start()
        box.wait_event("converged")
        image = make_stick("ext4", tmp_path / "usb-any.img", stick_tree(tmp_path / "t", "ana"), "ANY")
        insert(box, loops, image, reports=1)
        txt = read("ext4", image, "conjuring/REPORT.txt").decode()
        assert "APPLIED" in txt and "only onto an enrolled stick" in txt, txt
        assert not exists("ext4", image, "conjuring/CLASS.html")
        on_stick = txt.encode() + read("ext4", image, "conjuring/REPORT.html")
        assert b"conjuringctl sheet" in on_stick
        assert not [p for p in every_password(box, "ana") if p in on_stick]
    finally:
        box.close()
