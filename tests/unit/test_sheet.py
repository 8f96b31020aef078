"""The class sheet, REPORT.html and the password gate: pure rendering, Wi-Fi escaping, the address."""

from __future__ import annotations

import re

import pytest

from conjuringd import urls
from conjuringd.config.model import HotspotSettings, NetworkSettings
from conjuringd.config.problems import error, warning
from conjuringd.merge import MergeSummary
from conjuringd.qr import wifi_escape, wifi_payload
from conjuringd.reconcile.model import ImportOutcome, NetworkObserved, ReportFacts
from conjuringd.sheet import ClassSheet, Login, Wifi, page_count, render_class_sheet, wifi_of
from conjuringd.sticks.enrol import EnrolledStick, Verdict
from conjuringd.sticks.report import StickReport
from conjuringd.sticks.report_html import cost_words, render_not_enrolled_html, render_report_html
from conjuringd.sticks.stickfiles import for_stick, gets_passwords, render_files
from tests.support.pages import parse_wifi

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ADDRESS = "http://conjuring.local:8989"


@pytest.mark.parametrize("ssid, passphrase", [
    ("Class 5b", "correct horse"),
    ('we;ird,na:me\\"', 'p;a,s:s\\w"rd'),
    ("\\;;,,::\"\"\\", ";;;;;;;;"),
    ("Klasse 5ü", "über-geheim"),
])
def test_wifi_payload_escapes_and_parses_back(ssid, passphrase):
    payload = wifi_payload(ssid, passphrase)
    assert payload.startswith("WIFI:T:WPA;S:") and payload.endswith(";;")
    assert parse_wifi(payload) == {"T": "WPA", "S": ssid, "P": passphrase}


def test_wifi_escape_each_special_character():
    assert wifi_escape('\\;,:"') == '\\\\\\;\\,\\:\\"'
    assert wifi_escape("plain name 123") == "plain name 123"
    assert wifi_payload("open", "") == "WIFI:T:nopass;S:open;;"


def test_student_address_is_the_name_when_published_else_the_first_ip():
    ips = ("http://10.42.0.1:8989", "http://192.168.1.5:8989")
    assert urls.student_address("conjuring.local", 8989, ips) == ADDRESS
    assert urls.student_address("box.local", 80, ips) == "http://box.local"
    assert urls.student_address("", 8989, ips) == ips[0]
    assert urls.student_address(None, 8989, ()) == ""
    assert urls.login_url(ADDRESS) == ADDRESS + "/hub/login"
    assert urls.login_url(ADDRESS + "/", "ana b&c") == ADDRESS + "/hub/login?username=ana%20b%26c"


def test_wifi_of_the_hotspot_the_served_network_or_nothing():
    hotspot = NetworkSettings(hotspot=HotspotSettings(ssid="Class", passphrase="pw-12345678"))
    assert wifi_of(hotspot, None) == Wifi("Class", "pw-12345678", own=True)
    school = NetworkSettings(serve="School")
    observed = NetworkObserved("School", "activated", ("10.0.0.7/24",), ssid="SchoolNet")
    assert wifi_of(school, observed) == Wifi("SchoolNet")  # no passphrase: it is not the box's
    assert wifi_of(school, observed).payload == ""
    assert wifi_of(NetworkSettings(serve="none"), observed) == Wifi()


def sheet(n: int = 23, wifi: Wifi = Wifi("Class 5b", "pass;word", own=True), **kw) -> ClassSheet:
    logins = tuple(Login(f"student{i:02d}", f"pw-{i:02d}-abcd") for i in range(1, n + 1)) + (
        Login("teacher", "teach-pw-1", admin=True),)
    return ClassSheet(kw.pop("address", ADDRESS), wifi, logins, "nuc-7", "2026-12-02T06:00:00Z")


def qr_titles(text: str) -> list[str]:
    return re.findall(r'<svg viewBox="[^"]+" class="qr"><title>([^<]*)</title>', text)


def test_class_sheet_has_a_poster_and_one_slip_per_login_ten_to_a_page():
    s = sheet()
    text = render_class_sheet(s)
    assert page_count(s) == 4 and text.count('<section class="page') == 4
    assert text.count('class="slip') == 24 and text.count("TEACHER (ADMIN)") == 1
    for login in s.logins:
        assert f'<p class="value mono name">{login.name}</p>' in text
        assert f'<p class="value mono password">{login.password}</p>' in text
    assert qr_titles(text) == ["Join the Wi-Fi Class 5b", "The hub address", *(f"Log in as {x.name}" for x in s.logins)]
    assert ">pass;word<" in text and ADDRESS in text


def test_class_sheet_is_self_contained():
    text = render_class_sheet(sheet())
    for forbidden in ("<script", "<link", "<img", "@import", "url(", "src=", "@font-face"):
        assert forbidden not in text, forbidden
    assert "default-src 'none'" in text and "@page" in text and "@media print" in text


def test_existing_network_shows_its_name_and_no_passphrase_nor_wifi_code():
    text = render_class_sheet(sheet(wifi=Wifi("SchoolNet")))
    assert "SchoolNet" in text and "Password</p><p class=\"big" not in text
    assert "Join the Wi-Fi SchoolNet" not in qr_titles(text) and "The hub address" in qr_titles(text)
    unknown = render_class_sheet(sheet(wifi=Wifi(), address=""))
    assert "same network as this box" in unknown and "no address yet" in unknown
    assert not [t for t in qr_titles(unknown) if t.startswith(("Join", "The hub", "Log in"))]


def test_class_sheet_escapes_names_and_passwords():
    s = ClassSheet(ADDRESS, Wifi(HOSTILE, HOSTILE[:60], own=True), (Login(HOSTILE, HOSTILE),), HOSTILE, "")
    text = render_class_sheet(s)
    assert "<script" not in text and "<img" not in text and "&lt;script&gt;" in text
    assert "username=%3Cscript%3E" in s.login_url(s.logins[0])


FACTS = ReportFacts(hub_state="serving", hub_urls=("http://10.42.0.1:8989",), users=24, admins=1,
                    changes=("users synced live (24 users)",), active_config="a" * 64, address=ADDRESS,
                    students_online=18, students_recent=12, seconds=3.2,
                    generated_logins=(("ana", "made-pw-1234", False),), sheet=sheet(3))
ENROLLED = Verdict("enrolled", stick=EnrolledStick("0123456789abcdef", "1234-ABCD"))


def report(outcome: ImportOutcome, facts=FACTS, **kw) -> StickReport:
    return StickReport("2026-12-02T06:00:00Z", "nuc-7", "/dev/sdb1", kw.pop("label", "CONJURING"), "1234-ABCD",
                       outcome, facts, **kw)


def test_report_html_says_the_result_address_students_cost_and_links_the_sheet():
    text = render_report_html(report(ImportOutcome("applied", "a" * 64)), sheet_written=True)
    for needle in ("Done: the box now uses this stick", ADDRESS, "Students online now: <b>18</b>",
                   "12 active in the last 10 minutes", "users synced live (24 users)", "Applied live: nobody was interrupted",
                   '<a href="CLASS.html">CLASS.html</a>', "made-pw-1234", "nuc-7"):
        assert needle in text, needle
    without = render_report_html(report(ImportOutcome("applied", "a" * 64)), sheet_written=False)
    assert 'href="CLASS.html"' not in without and "conjuringctl sheet" in without


def test_report_html_lists_every_problem_with_file_and_line_inertly():
    problems = (error(f"custom/{HOSTILE}.csv", 7, f"duplicate user '{HOSTILE}'"), warning("custom/apt.txt", 0, "empty"))
    merge = MergeSummary(complete=False, added=(f"shared/{HOSTILE}",))
    text = render_report_html(report(ImportOutcome("invalid", problems=problems, merge=merge), facts=None,
                                     label=HOSTILE, refusals=(f"shared/{HOSTILE}: a link, skipped",)))
    assert "Not applied: the configuration on this stick has mistakes" in text
    assert "<td>7</td>" in text and 'class="sev-error">error<' in text and "Problems (1 error(s), 1 warning(s))" in text
    assert "<script" not in text and "<img" not in text and text.count("&lt;script&gt;") == 5


def test_cost_words():
    rebuilt = ReportFacts("serving", changes=("image built (layers: apt)", "hub container replaced (restart)"), seconds=95)
    words = " ".join(cost_words(rebuilt))
    assert "rebuilt" in words and "restarted" in words and "95 seconds" in words
    assert cost_words(ReportFacts("serving")) == ["Nothing had to change."]


def test_not_enrolled_html_says_how_and_nothing_else():
    text = render_not_enrolled_html("2026-12-02T06:00:00Z", "nuc-7", HOSTILE, "1234-ABCD", "/dev/sdb1")
    assert "not enrolled" in text and "conjuringctl enroll /dev/sdb1" in text and "<script" not in text


@pytest.mark.parametrize("verdict, trusted", [
    (ENROLLED, True), (Verdict("first", stick=ENROLLED.stick), True), (Verdict("any", stick=ENROLLED.stick), True),
    (Verdict("any"), False), (Verdict("refused", "revoked", ENROLLED.stick), False), (None, False),
])
def test_only_an_enrolled_stick_gets_passwords_and_the_sheet(verdict, trusted):
    assert gets_passwords(verdict) is trusted
    files = dict(render_files(report(ImportOutcome("applied", "a" * 64)), verdict))
    everything = b"".join(files.values())
    assert ("CLASS.html" in files) is trusted and (b"made-pw-1234" in everything) is trusted
    assert (b"pw-01-abcd" in everything) is trusted  # users.csv's own passwords: on the sheet only
    assert list(files)[:2] == ["REPORT.txt", "REPORT.html"]
    assert (b"CLASS.html beside this report" in files["REPORT.txt"]) is trusted
    admitted = verdict is None or verdict.admitted
    assert (b"students type: " + ADDRESS.encode() in files["REPORT.txt"]) is admitted  # strangers learn nothing
    if not trusted:
        assert for_stick(FACTS, verdict).sheet is None and for_stick(FACTS, verdict).generated_logins == ()


def test_no_sheet_after_a_refused_configuration_nor_for_a_stranger():
    files = dict(render_files(report(ImportOutcome("invalid", problems=(error("custom/users.csv", 2, "bad"),))), ENROLLED))
    assert "CLASS.html" not in files and b"pw-01-abcd" not in b"".join(files.values())
    stranger = dict(render_files(report(ImportOutcome("not-enrolled")), Verdict("refused", "no key")))
    assert sorted(stranger) == ["REPORT.html", "REPORT.txt"] and b"http://" not in stranger["REPORT.txt"]
