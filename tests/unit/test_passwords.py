"""Passwords a box makes for '(generated)' users: made once, kept root-only, shown where they belong."""

from __future__ import annotations

import re
from pathlib import Path

from conjuringd.config.load import load_custom
from conjuringd.passwords import GeneratedPasswords, generated_logins, make_password
from conjuringd.reconcile.model import ImportOutcome, ReportFacts
from conjuringd.sticks.report import StickReport, render_report

REPO = Path(__file__).resolve().parents[2]


def test_made_once_per_box_and_name_kept_root_only(tmp_path):
    store = GeneratedPasswords(tmp_path / "secrets")
    first = store.ensure(["student1", "teacher"])
    assert all(re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}", p) for p in first.values())
    assert first["student1"] != first["teacher"]
    assert GeneratedPasswords(tmp_path / "secrets").ensure(["teacher", "student1"]) == first, "kept across restarts"
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert store.path.stat().st_mode & 0o777 == 0o600
    other_box = GeneratedPasswords(tmp_path / "other").ensure(["student1"])
    assert other_box["student1"] != first["student1"]


def test_the_shipped_configuration_gets_a_password_per_user_and_none_of_the_examples(tmp_path):
    config, _ = load_custom(REPO / "custom")
    resolved = GeneratedPasswords(tmp_path).resolve(config)
    passwords = {u.name: u.password for u in resolved.users}
    assert set(passwords) == {"student1", "student2", "teacher"} and all(passwords.values())
    assert not {"change-me-1", "change-me-2", "change-me-teacher", "bar"} & set(passwords.values())
    assert [u.name for u in generated_logins(resolved)] == ["student1", "student2", "teacher"]
    assert len({make_password() for _ in range(100)}) == 100


def _report(result: str) -> str:
    facts = ReportFacts(hub_state="serving", generated_logins=(("student1", "abcd-efgh-jkmn", False),
                                                               ("teacher", "pqrs-tuvw-xyz2", True)))
    return render_report(StickReport("t", "box", "/dev/sdb", "STICK", "U", ImportOutcome(result, "c" * 64), facts))


def test_the_report_of_an_applied_stick_shows_them_an_invalid_one_does_not():
    text = _report("applied")
    assert "Passwords made by this box" in text
    assert "  student1  abcd-efgh-jkmn" in text and "  teacher   pqrs-tuvw-xyz2   (admin)" in text
    assert "abcd-efgh-jkmn" in _report("unchanged")
    assert "abcd-efgh-jkmn" not in _report("invalid") and "abcd-efgh-jkmn" not in _report("failed")
