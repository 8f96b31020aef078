"""users.csv: every problem with its file, line and message; the original format accepted."""

from __future__ import annotations

import pytest

from conjuringd.config.problems import Severity
from conjuringd.config.users import RESERVED, parse_users

FILE = "custom/users.csv"
HEADER = b"name,password,admin (first row is header)\n"


def only_error(data: bytes):
    users, problems = parse_users(data, FILE)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    assert len(errors) == 1, problems
    assert errors[0].file == FILE
    return users, errors[0]


@pytest.mark.parametrize(
    "rows, line, message",
    [
        (b"jane,pw\nJane,pw2\n", 3, "duplicate user 'Jane', 'jane' in lower case (first on line 2)"),
        (b"Jane.Doe,pw\njane.doe,pw2\n", 3, "duplicate user 'jane.doe' (first on line 2)"),
        (b"jane,pw\nbob,pw\n\njane,other\n", 5, "duplicate user 'jane' (first on line 2)"),
        (b"2024,pw\n", 2, "invalid user name '2024': a name of digits only would be read as a number"),
        (b".jdoe,pw\n", 2, "invalid user name '.jdoe': cannot start with '.'"),
        (b"-jdoe,pw\n", 2, "invalid user name '-jdoe': cannot start with '-'"),
        (b"jdoe.,pw\n", 2, "invalid user name 'jdoe.': cannot end with '.'"),
        (b"jane doe,pw\n", 2, "invalid user name 'jane doe': no spaces"),
        ("j\u00e4ne,pw\n".encode(), 2, "invalid user name 'j\u00e4ne': use ASCII letters"),
        (b"a/b,pw\n", 2, "invalid user name 'a/b': use letters, digits"),
        (b"a:b,pw\n", 2, "invalid user name 'a:b'"),
        (b"Root,pw\n", 2, "user name 'root' is reserved"),
        (b"conjuring-probe,pw\n", 2, "user name 'conjuring-probe' is reserved"),
        (b"a" * 33 + b",pw\n", 2, "at most 32 characters"),
        (b",pw\n", 2, "empty user name"),
        (b"root,pw\n", 2, "user name 'root' is reserved"),
        (b"nobody,pw\n", 2, "user name 'nobody' is reserved"),
        (b"conjuring,pw\n", 2, "user name 'conjuring' is reserved"),
        (b"jovyan,pw\n", 2, "user name 'jovyan' is reserved"),
        (b"jane,\n", 2, "empty password for 'jane'"),
        (b"jane,   ,1\n", 2, "empty password for 'jane'"),
        (b'jane,"pass\nword"\nbob,pw\n', 2, "the password of 'jane' contains a line break"),
        (b'jane,"pass\x00word"\n', 2, "the password of 'jane' contains a NUL character"),
        (b"jane,pa\x07ss\n", 2, "the password of 'jane' contains a control character"),
        (b"jane\n", 2, "expected name,password[,admin] but found one field (no comma)"),
        (b"jane;pw;1\n", 2, "found one field (no comma): separate the fields with ',' not ';'"),
        (b"jane\tpw\n", 2, "found one field (no comma): separate the fields with ',' not '\\t'"),
        (b"bob,pw\nj\xe9ne,pw\n", 3, "is not valid UTF-8: byte 0xe9 at byte offset 50 (column 2)"),
        (b"", 0, "no users: add one row per student after the header row"),
        (b"\n\n,,\n", 0, "no users"),
    ],
)
def test_users_problem(rows: bytes, line: int, message: str):
    _, problem = only_error(HEADER + rows)
    assert problem.line == line
    assert message in problem.message


def test_every_reserved_name_is_refused():
    for name in sorted(RESERVED):
        if not name.startswith("_"):
            _, problem = only_error(HEADER + f"{name},pw\n".encode())
            assert "reserved" in problem.message, name
    for name in ("daemon", "bin", "sys", "www-data", "systemd-network", "messagebus", "sudo", "users"):
        assert name in RESERVED
    assert "admin" not in RESERVED, "the original's generator writes a user named admin"


def test_original_format_two_and_three_columns_and_flags():
    data = HEADER + b"foo,bax\nbaz,qux,\nann,pw,1\nbea,pw,Y\ncid,pw,yes\ndan,pw,T\neve,pw,TRUE\nfay,pw,no\ngus,pw,0\n"
    users, problems = parse_users(data, FILE)
    assert problems == []
    assert [(u.name, u.admin) for u in users] == [
        ("foo", False), ("baz", False), ("ann", True), ("bea", True), ("cid", True),
        ("dan", True), ("eve", True), ("fay", False), ("gus", False),
    ]
    assert [u.line for u in users] == list(range(2, 11))


def test_header_is_ignored_whatever_it_says():
    users, problems = parse_users(b"jane,not-a-header,yes\nbob,pw\n", FILE)
    assert problems == [] and [u.name for u in users] == ["bob"]


def test_bom_crlf_blank_lines_quotes_and_colon():
    data = b'\xef\xbb\xbfname,password\r\n\r\njane,"pa,ss:word",1\r\n\r\n  bob , pw \r\n'
    users, problems = parse_users(data, FILE)
    assert problems == []
    assert [(u.name, u.password, u.admin, u.line) for u in users] == [
        ("jane", "pa,ss:word", True, 3), ("bob", "pw", False, 5),
    ]


def test_every_bad_row_is_reported_not_only_the_first():
    data = HEADER + b"Root,pw\nroot,pw\nok,pw\nx,\n"
    users, problems = parse_users(data, FILE)
    assert [p.line for p in problems] == [2, 3, 5]
    assert [u.name for u in users] == ["ok"]


def test_password_never_appears_in_messages():
    _, problems = parse_users(HEADER + b"Jane,hunter2-secret,maybe\n", FILE)
    assert problems and all("hunter2" not in str(p) for p in problems)


def test_generated_passwords_and_public_example_passwords():
    data = HEADER + b"ana,(generated)\nben,change-me-1\ncaz,bar,yes\ndan, (generated) ,yes\neve,generated\n"
    users, problems = parse_users(data, FILE)
    assert [(u.name, u.generated, u.password, u.admin) for u in users] == [
        ("ana", True, "", False), ("ben", False, "change-me-1", False), ("caz", False, "bar", True),
        ("dan", True, "", True), ("eve", False, "generated", False)]
    assert [(p.line, p.severity.value) for p in problems] == [(3, "warning"), (4, "warning")]
    assert "the password of 'ben' is an example printed in a public repository" in problems[0].message
    assert "(generated)" in problems[0].message
