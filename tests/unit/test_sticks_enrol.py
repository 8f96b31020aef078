"""Stick enrolment: the credential format, the verdict, the box's record, reading stick.key safely."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conjuringd.config.settings import parse_settings
from conjuringd.paths import Paths
from conjuringd.sticks.enrol import (
    MAX_KEY_BYTES, Credential, EnrolError, Enrolment, EnrolledStick, judge, new_credential, parse_key,
    Verdict, read_credential, render_key, token_for, write_credential,
)
from conjuringd.sticks.admission import render_not_enrolled

SECRET = bytes(range(32))
UUID = "1234-ABCD"


def test_key_round_trip_and_token_binds_id_and_uuid():
    cred = new_credential(SECRET, UUID)
    assert parse_key(render_key(cred)) == cred
    assert cred.token == token_for(SECRET, cred.id, "1234-abcd")  # the UUID's case does not matter
    assert cred.token != token_for(SECRET, cred.id, "1234-ABCE")
    assert cred.token != token_for(bytes(32), cred.id, UUID)
    assert new_credential(SECRET, UUID).id != cred.id


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"id=0123456789abcdef\ntoken=" + b"a" * 64,  # no format line
    b"conjuring-stick-key 1\nid=0123456789abcdef\n",  # no token
    b"conjuring-stick-key 1\nid=0123456789ABCDEF\ntoken=" + b"a" * 64,  # upper-case hex
    b"conjuring-stick-key 1\nid=0123456789abcdef\nid=0123456789abcdee\ntoken=" + b"a" * 64,  # twice
    b"conjuring-stick-key 2\nid=0123456789abcdef\ntoken=" + b"a" * 64,
    b"conjuring-stick-key 1\nid=0123456789abcdef\ntoken=" + b"a" * 64 + b"\n#" + b"x" * MAX_KEY_BYTES,
])
def test_parse_key_refuses_anything_doubtful(data):
    assert parse_key(data) is None


def enrolled(cred: Credential, **kw) -> EnrolledStick:
    return EnrolledStick(cred.id, kw.pop("fs_uuid", UUID), **kw)


def test_judge():
    cred = new_credential(SECRET, UUID)
    entry = enrolled(cred)
    assert judge((), None, None, UUID, "enrolled").kind == "first"
    assert judge((entry,), SECRET, None, UUID, "any") == Verdict("any")  # admitted, but nobody: no passwords
    assert judge((entry,), SECRET, cred, UUID, "any") == Verdict("any", stick=entry)  # enrolled: gets the sheet
    assert judge((enrolled(cred, revoked_at="x"),), SECRET, cred, UUID, "any") == Verdict("any")
    assert judge((entry,), SECRET, Credential(cred.id, "0" * 64), UUID, "any") == Verdict("any")
    assert judge((), SECRET, cred, UUID, "any") == Verdict("any")  # never enrolled on first use under "any"
    assert judge((entry,), SECRET, cred, UUID, "enrolled").kind == "enrolled"
    assert judge((entry,), SECRET, cred, UUID.lower(), "enrolled").kind == "enrolled"
    refused = {
        "no credential": judge((entry,), SECRET, None, UUID, "enrolled"),
        "unknown": judge((enrolled(new_credential(SECRET, UUID)),), SECRET, cred, UUID, "enrolled"),
        "revoked": judge((enrolled(cred, revoked_at="2026-12-01T10:00:00Z"),), SECRET, cred, UUID, "enrolled"),
        "other filesystem": judge((entry,), SECRET, Credential(cred.id, token_for(SECRET, cred.id, "9999-9999")),
                                  "9999-9999", "enrolled"),
        "forged token": judge((entry,), SECRET, Credential(cred.id, "0" * 64), UUID, "enrolled"),
        "box lost its secret": judge((entry,), None, cred, UUID, "enrolled"),
        "every stick revoked: no second first use": judge(
            (enrolled(cred, revoked_at="x"),), SECRET, None, UUID, "enrolled"),
    }
    assert {name: v.kind for name, v in refused.items()} == {name: "refused" for name in refused}
    assert all(v.reason for v in refused.values())


@pytest.fixture
def box(tmp_path) -> Enrolment:
    return Enrolment(Paths(state_dir=tmp_path / "state"))


def test_enrol_check_revoke_on_the_box(box, tmp_path):
    stick = tmp_path / "stick" / "conjuring"
    stick.mkdir(parents=True)
    first = box.enrol(stick, UUID, "TEACHER", "vfat", "first stick", only_if_first=True)
    assert first is not None and (stick / "stick.key").is_file()
    assert stat.S_IMODE(os.stat(box.folder / "stick-secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(box.registry_path).st_mode) == 0o600
    assert (stick / "stick.key").read_bytes().split(b"token=")[1][:64] not in box.registry_path.read_bytes()
    assert box.enrol(stick, "5555-5555", "OTHER", "vfat", "first stick", only_if_first=True) is None
    verdict = box.check(read_credential(stick), UUID, "enrolled")
    assert verdict.kind == "enrolled" and verdict.stick.id == first.id and verdict.stick.last_used
    assert box.check(read_credential(stick), "5555-5555", "enrolled").kind == "refused"  # copied to another fs

    second_dir = tmp_path / "stick2" / "conjuring"
    second_dir.mkdir(parents=True)
    second = box.enrol(second_dir, "7777-7777", "SPARE", "ext4", "conjuringctl enroll")
    box.revoke(first.id)
    assert box.check(read_credential(stick), UUID, "enrolled").kind == "refused"
    assert box.check(read_credential(second_dir), "7777-7777", "enrolled").kind == "enrolled"
    with pytest.raises(EnrolError):
        box.revoke(first.id)
    with pytest.raises(EnrolError):
        box.revoke("0000000000000000")
    again = box.enrol(second_dir, "7777-7777", "SPARE", "ext4", "conjuringctl enroll")  # re-enrol: old id revoked
    states = {s.id: s.active for s in box.sticks()}
    assert states == {first.id: False, second.id: False, again.id: True}


def test_enrol_needs_a_filesystem_uuid(box, tmp_path):
    with pytest.raises(EnrolError, match="no UUID"):
        box.enrol(tmp_path, "", "X", "ext4", "conjuringctl enroll")
    assert box.sticks() == ()


def test_unreadable_record_refuses_every_stick_and_never_reopens_first_use(box, tmp_path):
    box.folder.mkdir(parents=True)
    box.registry_path.write_text("{not json")
    assert box.check(None, UUID, "enrolled").kind == "refused"


def test_read_credential_opens_only_a_small_regular_file(tmp_path):
    conjuring = tmp_path / "conjuring"
    conjuring.mkdir()
    cred = new_credential(SECRET, UUID)
    real = tmp_path / "elsewhere.key"
    real.write_bytes(render_key(cred))
    (conjuring / "stick.key").symlink_to(real)
    assert read_credential(conjuring) is None  # a link is not followed
    (conjuring / "stick.key").unlink()
    os.mkfifo(conjuring / "stick.key")
    assert read_credential(conjuring) is None  # a FIFO does not block
    (conjuring / "stick.key").unlink()
    (conjuring / "stick.key").write_bytes(render_key(cred) + b"#" * MAX_KEY_BYTES)
    assert read_credential(conjuring) is None
    (conjuring / "stick.key").unlink()
    (conjuring / "STICK.KEY").write_bytes(render_key(cred))  # FAT shows 8.3 names in upper case
    assert read_credential(conjuring) == cred
    write_credential(conjuring, new_credential(SECRET, UUID))
    assert os.listdir(conjuring) == ["STICK.KEY"]  # replaced in place


def test_not_enrolled_report_says_how_and_nothing_else():
    text = render_not_enrolled("2026-12-01T10:00:00Z", "box1", "STICK", UUID, "/dev/sdb1")
    assert "this stick is not enrolled on this box" in text
    assert "conjuringctl enroll" in text and "/dev/sdb1" in text and "\r\n" in text
    for detail in ("http", "Users", "Config", "Active", "Hub"):
        assert detail not in text


def test_usb_trust_setting():
    settings, problems = parse_settings(b'[usb]\ntrust = "any"\n', "conjuring.toml")
    assert settings.usb.trust == "any" and problems == []
    assert parse_settings(b"", "conjuring.toml")[0].usb.trust == "enrolled"
    _, problems = parse_settings(b'[usb]\ntrust = "everyone"\n', "conjuring.toml")
    assert len(problems) == 1 and 'should be "enrolled" or "any"' in problems[0].message


def test_conjuringctl_sticks_table():
    from conjuringd.ctl import format_sticks

    assert "first stick inserted will be" in format_sticks([])
    table = format_sticks([
        {"id": "0123456789abcdef", "label": "TEACHER", "fs_uuid": UUID, "enrolled_at": "2026-12-01T10:00:00Z",
         "last_used": "2026-12-01T11:00:00Z", "revoked_at": ""},
        {"id": "fedcba9876543210", "label": "", "fs_uuid": "9999-9999", "enrolled_at": "2026-12-01T09:00:00Z",
         "last_used": "", "revoked_at": "2026-12-01T12:00:00Z"},
    ]).splitlines()
    assert table[0].split() == ["ID", "LABEL", "FS", "UUID", "ENROLLED", "LAST", "USED", "STATE"]
    assert table[1].split() == ["0123456789abcdef", "TEACHER", UUID, "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z",
                                "enrolled"]
    assert table[2].split()[-2:] == ["revoked", "2026-12-01T12:00:00Z"] and table[2].split()[1] == "-"
