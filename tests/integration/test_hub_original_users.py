"""A users.csv as the original Conjuring's users wrote it (data/users/university.csv: a dotted name, an
upper-case name, a user named admin, admin values in any case), parsed by the daemon's parser and served
by the real hub: each account is created by useradd in the container, logs in, and gets its lab.

Its own container name and port: it never touches the other hub tests' container.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import HubSession
from conjuringd.config.users import parse_users
from tests.support.docker import DOCKER, require_docker
from tests.support.hubworld import World, container_logs, remove_hub_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-userstest", 18996
BASE = f"http://127.0.0.1:{PORT}"
CSV = Path(__file__).resolve().parents[1] / "unit" / "data" / "users" / "university.csv"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    users, problems = parse_users(CSV.read_bytes(), "custom/users.csv")
    assert [p.severity.value for p in problems] == ["warning"], problems  # J.Smith folded
    w = World(tmp_path_factory.mktemp("users"), name=NAME, port=PORT,
              users=tuple((u.name, u.password, u.admin) for u in users))
    asyncio.run(w.converge())
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers(NAME)


def account(name: str) -> list[str]:
    done = subprocess.run([DOCKER, "exec", NAME, "getent", "passwd", name], capture_output=True, text=True)
    return done.stdout.strip().split(":")


def test_each_account_exists_with_its_home_and_a_stable_uid(world):
    for name in ("jane.doe", "j.smith", "mo", "admin", "kim"):
        entry = account(name)
        assert entry[0] == name and int(entry[2]) >= 2000 and entry[5] == f"/home/{name}", entry
    assert account("J.Smith") == [""], "no upper-case account: the name was folded"


def test_a_dotted_name_logs_in_and_gets_its_lab(world):
    session = HubSession(BASE, timeout=120)
    assert session.login("jane.doe", "pw-jane") == 302
    assert session.wait_lab("jane.doe", 240) == 200, container_logs(40, name=NAME)
    status, _, _ = session.request("GET", "/hub/api/users")
    assert status == 403, "jane.doe is not an admin"


def test_the_upper_case_name_logs_in_as_written_in_users_csv_and_in_lower_case(world):
    for typed in ("J.Smith", "j.smith", "J.SMITH"):
        session = HubSession(BASE, timeout=60)
        assert session.login(typed, "pw-john") == 302, typed
        status, _, body = session.request("GET", "/hub/api/user")
        assert status == 200 and b'"name": "j.smith"' in body.replace(b'":"', b'": "'), body[:200]
    assert HubSession(BASE, timeout=60).login("J.Smith", "PW-JOHN") == 403, "the password is not folded"


def test_the_user_named_admin_is_the_admin_the_file_says(world):
    session = HubSession(BASE, timeout=60)
    assert session.login("admin", "pw-admin") == 302
    status, _, _ = session.request("GET", "/hub/api/users")
    assert status == 200, "admin's row says t: an admin"
    assert HubSession(BASE, timeout=60).login("kim", "pw-kim") == 302
