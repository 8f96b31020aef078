"""`conjuringctl users new`: a users.csv the daemon reads, with random passwords that are easy to read."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

from conjuringd import ctl, passwords
from conjuringd.config.users import parse_users
from conjuringd.newusers import NewUsersError, users_csv

DATA = Path(__file__).parent / "data"
AMBIGUOUS = set("0Oo1lIi")


def run(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        ctl.main(list(argv))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_stdout_is_a_users_csv_the_daemon_reads_without_a_problem(capsys):
    code, out, _ = run(capsys, "users", "new", "12", "--admin", "teacher")
    assert code == 0
    users, problems = parse_users(out.encode(), "custom/users.csv")
    assert problems == []
    assert [u.name for u in users] == [f"student{i:02d}" for i in range(1, 13)] + ["teacher"]
    assert [u.admin for u in users] == [False] * 12 + [True]
    assert out.splitlines()[0] == "name,password,admin"


def test_passwords_are_distinct_unambiguous_and_in_groups(capsys):
    _, out, _ = run(capsys, "users", "new", "200", "--prefix", "kid")
    users, _ = parse_users(out.encode(), "custom/users.csv")
    pws = [u.password for u in users]
    assert len(set(pws)) == 200
    assert all(re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}", pw) for pw in pws), pws[:3]
    assert not AMBIGUOUS & set("".join(pws))
    assert len(set("".join(pws)) - {"-"}) > 25, "200 passwords use (nearly) the whole alphabet"


def test_passwords_come_from_the_secrets_module(monkeypatch):
    drawn = []

    def choice(seq):
        drawn.append(seq)
        return seq[len(drawn) % len(seq)]

    monkeypatch.setattr(passwords.secrets, "choice", choice)
    text = users_csv(2, password=passwords.make_password)
    assert len(drawn) == 24 and all(seq == passwords.ALPHABET for seq in drawn)
    assert text.count("-") == 4


def test_prefix_numbering_width_and_prefix_with_a_dot():
    names = [line.split(",")[0] for line in users_csv(9, prefix="cs.y1-").splitlines()[1:]]
    assert names == [f"cs.y1-{i}" for i in range(1, 10)]
    assert [line.split(",")[0] for line in users_csv(100).splitlines()[1:]][::99] == ["student001", "student100"]


@pytest.mark.parametrize("args, message", [
    (dict(count=0), "the number of users must be 1 to 1000, not 0"),
    (dict(count=1001), "the number of users must be 1 to 1000"),
    (dict(count=2, prefix="Kid"), "user names must be lower case: 'Kid1' would be 'kid1'"),
    (dict(count=2, prefix="a b"), "invalid user name 'a b1': no spaces"),
    (dict(count=2, admin="student1"), "duplicate user 'student1'"),
    (dict(count=2, admin="root"), "user name 'root' is reserved"),
])
def test_arguments_that_cannot_make_a_valid_file(args, message):
    with pytest.raises(NewUsersError) as raised:
        users_csv(**args)
    assert message in str(raised.value)


def test_bad_arguments_exit_two_with_the_reason(capsys):
    code, out, err = run(capsys, "users", "new", "3", "--prefix", "Kid")
    assert code == 2 and out == "" and "must be lower case" in err


def test_output_file_is_owner_only_never_overwritten_without_force_and_validates(capsys, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(DATA / "original" / "custom", folder)
    target = folder / "users.csv"
    before = target.read_bytes()
    code, _, err = run(capsys, "users", "new", "5", "-o", str(target))
    assert code == 2 and "exists already (use --force" in err
    assert target.read_bytes() == before, "the file there is untouched"
    code, out, err = run(capsys, "users", "new", "5", "--admin", "admin", "-o", str(target), "--force")
    assert code == 0 and out == "" and "wrote 6 users" in err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() != before
    code, out, _ = run(capsys, "validate", str(folder))
    assert code == 0 and out.strip().splitlines()[-1] == "0 error(s), 0 warning(s)"
    fresh = tmp_path / "new.csv"
    assert run(capsys, "users", "new", "1", "-o", str(fresh))[0] == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert len(fresh.read_text().splitlines()) == 2
