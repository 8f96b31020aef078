"""users.csv files in the original Conjuring's formats (fixtures in data/users/, written after its
csv2useradd.sh and src/create_users.py) are accepted as it accepted them; what it let pass is said
once as a warning, which reaches the import outcome, the stick's report and the log."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conjuringd.config.load import load_custom
from conjuringd.config.problems import Severity
from conjuringd.config.users import parse_users
from conjuringd.paths import Paths
from conjuringd.reconcile.execute import Adapters
from conjuringd.reconcile.loop import Reconciler
from conjuringd.reconcile.triggers import Heartbeat, Triggers
from conjuringd.status import StatusBoard
from conjuringd.sticks.report import StickReport, render_report
from conjuringd.store import SnapshotStore

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
FILE = "custom/users.csv"


def parse(name: str):
    users, problems = parse_users((DATA / "users" / name).read_bytes(), FILE)
    assert not [p for p in problems if p.severity is Severity.ERROR], problems
    return [(u.name, u.password, u.admin) for u in users], [p for p in problems if p.severity is Severity.WARNING]


def test_first_versions_two_columns_name_password():
    users, warnings = parse("first-versions.csv")
    assert users == [("alice", "wonderland7", False), ("bruno", "kite-42", False)]
    assert warnings == []


def test_generator_output_with_its_admin_row_and_punctuated_passwords():
    users, warnings = parse("generator.csv")
    # create_users.py writes "Username,Password" and an `admin` row without an admin column: not an admin
    assert users == [("class1", "Qe7_(kP;", False), ("class2", "m:Z3)tu9w", False), ("class3", "Hy_8;aa(", False),
                     ("admin", "r7(Kq:_v2;Xm", False)]
    assert warnings == []


def test_dotted_and_upper_case_names_and_admin_values_any_case():
    users, warnings = parse("university.csv")
    assert users == [("jane.doe", "pw-jane", False), ("j.smith", "pw-john", True), ("mo", "pw-mo", True),
                     ("admin", "pw-admin", True), ("kim", "pw-kim", False)]
    assert [(w.line, w.message) for w in warnings] == [
        (3, "user names are folded to lower case, as JupyterHub does at login ('J.Smith' -> 'j.smith'); "
            "students may type them either way")]


def test_spreadsheet_export_extra_columns_and_unknown_admin_value():
    users, warnings = parse("spreadsheet.csv")
    assert users == [("ana", "pw-ana", True), ("ben", "pw-ben", False), ("caz", "pw-caz", False)]
    assert [str(w) for w in warnings] == [
        "custom/users.csv:2: warning: columns after the third are ignored (5 fields), as the "
        "original Conjuring did; a password containing ',' must be quoted: \"pass,word\" [3 rows: line 2, 3, 4]",
        "custom/users.csv:3: warning: admin values other than 1, y, yes, t, true (or blank, 0, n, no, f, false) "
        "mean not admin ('maybe')",
        "custom/users.csv:4: warning: user names are folded to lower case, as JupyterHub does at login "
        "('Caz' -> 'caz'); students may type them either way",
    ]


def test_unquoted_comma_in_a_password_splits_as_the_originals_awk_did():
    users, problems = parse_users(b"name,password,admin\njane,pa,ss,1\n", FILE)
    assert [(u.name, u.password, u.admin) for u in users] == [("jane", "pa", False)]
    assert {p.severity for p in problems} == {Severity.WARNING} and len(problems) == 2


def test_rejected_rows_get_their_error_only_and_warnings_list_every_row():
    rows = b"".join(b"Student%d,pw,%s,x\n" % (i, b"no" if i % 2 else b"maybe") for i in range(1, 14))
    _, problems = parse_users(b"name,password,admin\nRoot,pw,maybe,x\n" + rows, FILE)
    assert [(p.line, p.severity.value) for p in problems if p.severity is Severity.ERROR] == [(2, "error")]
    extra, admin, case = [p for p in problems if p.severity is Severity.WARNING]
    assert extra.line == 3 and extra.message.endswith("[13 rows: line 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ...]")
    assert admin.line == 4 and "('maybe') [6 rows: line 4, 6, 8, 10, 12, 14]" in admin.message
    assert case.line == 3 and "'Student1' -> 'student1'" in case.message


@pytest.mark.parametrize("name", ["university.csv", "generator.csv", "spreadsheet.csv", "first-versions.csv"])
def test_a_folder_with_the_original_users_csv_loads(tmp_path, name):
    folder = tmp_path / "custom"
    shutil.copytree(DATA / "original" / "custom", folder)
    shutil.copy(DATA / "users" / name, folder / "users.csv")
    config, problems = load_custom(folder)
    assert config is not None, problems
    assert [u.name for u in config.users] == [u[0] for u in parse(name)[0]]


# useradd as provision.py runs it in the hub, on a copy of this Debian host's account files


def useradd_in(prefix: Path, name: str, uid: int) -> subprocess.CompletedProcess:
    subprocess.run(["groupadd", "--prefix", str(prefix), "-f", "-g", str(uid), name], capture_output=True)
    return subprocess.run(["useradd", "--prefix", str(prefix), "-u", str(uid), "-g", str(uid), "-M", "-d",
                           f"/home/{name}", "-s", "/bin/bash", "-c", "conjuring", name], capture_output=True, text=True)


@pytest.fixture
def prefix(tmp_path) -> Path:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd (the CI runs as root on Debian)")
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), tmp_path / "etc" / name)
    return tmp_path


ACCEPTED = ["jane.doe", "J.Smith", "admin", "a.b-c_d", "_x", "2nd-year", "x" * 32, "class1"]
REFUSED_BY_USERADD = ["jane doe", "a:b", "a,b", "-jdoe", "x" * 33, "+x", "~x"]


def test_every_accepted_name_is_created_by_useradd_as_the_hub_runs_it(prefix):
    data = "name,password\n" + "".join(f"{name},pw\n" for name in ACCEPTED)
    users, problems = parse_users(data.encode(), FILE)
    assert [u.name for u in users] == [n.lower() for n in ACCEPTED]
    for uid, user in enumerate(users, start=2000):
        done = useradd_in(prefix, user.name, uid)
        assert done.returncode == 0, (user.name, done.stderr)
    passwd = (prefix / "etc" / "passwd").read_text()
    assert all(f"\n{u.name}:x:" in passwd for u in users)


def test_names_useradd_refuses_are_errors_before_the_hub(prefix):
    for uid, name in enumerate(REFUSED_BY_USERADD, start=3000):
        assert useradd_in(prefix, name, uid).returncode != 0, name
        _, problems = parse_users(f'name,password\n"{name}",pw\n'.encode(), FILE)
        assert [p.severity for p in problems] == [Severity.ERROR], (name, problems)


# the warnings travel like every other problem: import outcome, stick report, log


class NoHub:
    async def observe(self):
        from conjuringd.reconcile.model import HubObserved
        return HubObserved(frozenset(), None)


class Silent:
    def notify(self, state):
        pass


async def test_warnings_reach_the_outcome_the_report_and_the_log(tmp_path):
    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    stick = tmp_path / "stick" / "custom"
    shutil.copytree(REPO / "custom", stick)
    shutil.copy(DATA / "users" / "spreadsheet.csv", stick / "users.csv")
    reconciler = Reconciler(SnapshotStore(paths), Adapters(hub=NoHub()), StatusBoard(paths.status_file, Silent()),
                            Triggers(quiet=0.01), Heartbeat(), hub_enabled=True)
    with capture_logs() as logs:
        outcome = await reconciler.import_folder(stick, {"kind": "stick"})
    assert outcome.result == "applied"
    shown = [str(p) for p in outcome.problems if p.file == FILE]
    assert len(shown) == 3 and all(": warning: " in line for line in shown)
    text = render_report(StickReport("2026-12-02T02:00:00Z", "box", "/dev/sdb1", "STICK", "1-A", outcome))
    assert "APPLIED" in text and all(line in text for line in shown)
    logged = [e["problem"] for e in logs if e["event"] == "config_problem" and e["log_level"] == "warning"]
    assert all(line in logged for line in shown)


def test_each_different_value_is_shown_once_at_most_three():
    rows = b"".join(b"s%d,pw,%s\n" % (i, v) for i, v in enumerate([b"maybe", b"maybe", b"nope", b"x", b"?"]))
    _, problems = parse_users(b"name,password,admin\n" + rows, FILE)
    assert [p.message for p in problems] == [
        "admin values other than 1, y, yes, t, true (or blank, 0, n, no, f, false) mean not admin "
        "('maybe', 'nope', 'x', ...) [5 rows: line 2, 3, 4, 5, 6]"]
