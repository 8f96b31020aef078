"""One hub driven through DockerHub's Protocol methods, with plan() deciding, as the reconciler does.

Shared by tests/integration/test_hub_docker.py, test_hub_forkserver.py and tests/bench/apply.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conjuringd.adapters.docker import DockerHub
from conjuringd.adapters.hub_http import HubSession
from conjuringd.config.model import HubSettings
from conjuringd.paths import Paths
from conjuringd.reconcile.model import (
    BuildImage, CheckContainer, DropStaged, Observed, ReplaceContainer, StageContainer, StartContainer, SyncFiles,
    SyncUsers,
)
from conjuringd.reconcile.plan import plan
from tests.support.docker import DOCKER
from tests.support.hubconfig import desired, make_config

NAME = "conjuring-hubtest"  # never the real hub's name: a hub on this machine is left alone
PORT = 18989
BASE = f"http://127.0.0.1:{PORT}"
USERS = (("alice", "alice-pw-1", False), ("bob", "bob-pw-1", False), ("teacher", "teacher-pw-1", True))


class World:
    def __init__(self, root: Path, name: str = NAME, port: int = PORT, users=USERS, hub_config: bytes = b"",
                 switch_idle: int = 0):
        """A world whose state lives under `root`; two worlds share the hub's name and port unless given others
        (a module with its own name and port never touches the other hub tests' container); `users` are
        (name, password, admin) rows, `hub_config` the teacher's srv/jupyterhub_config.py; `switch_idle` 0
        (never wait) unless a test is about the waiting switch: the others change the image while their
        students are logged in and expect the new hub at once."""
        self.root = root
        self.name, self.port, self.base = name, port, f"http://127.0.0.1:{port}"
        self.hub = DockerHub(Paths(state_dir=root / "state", config_dir=root / "etc", runtime_dir=root / "run"),
                             container_name=name)
        self.cfg = root / "custom"
        (self.cfg / "shared").mkdir(parents=True)
        (self.cfg / "home_default").mkdir()
        (self.cfg / "shared" / "notes.txt").write_text("week 1\n")
        (self.cfg / "home_default" / "README.md").write_text("welcome\n")
        self.config = make_config(self.cfg, users=users, hub_config=hub_config, hub=HubSettings(port=port, health_timeout=150, idle_timeout=600,
                                                                                                switch_idle=switch_idle))
        self.builds = 0
        self.images: set[str] = set()  # image hashes this world built or used
        self.switch_requested = False  # as `conjuringctl switch` records it in the daemon's state

    def desired(self):
        return desired(self.config)

    async def converge(self, allow=None) -> list:
        """Run plan() against observe() until it is empty; return the action types done."""
        done = []
        for _ in range(5):
            d = self.desired()
            self.images.add(d.hashes.image)
            actions = plan(d, Observed(hub=await self.hub.observe(), switch_requested=self.switch_requested))
            if not actions:
                return done
            for action in actions:
                assert allow is None or type(action) in allow, f"unexpected {action}"
                done.append(type(action))
                if isinstance(action, BuildImage):
                    self.builds += 1
                    await self.hub.build_image(d, lambda line: None)
                elif isinstance(action, ReplaceContainer):
                    await self.hub.replace_container(d, lambda line: None)
                elif isinstance(action, SyncUsers):
                    await self.hub.sync_users(d)
                elif isinstance(action, SyncFiles):
                    await self.hub.sync_files(d)
                elif isinstance(action, StartContainer):
                    await self.hub.start_container(action.container_id)
                elif isinstance(action, StageContainer):
                    await self.hub.stage_container(d, lambda line: None)
                elif isinstance(action, DropStaged):
                    await self.hub.drop_staged(action.container_id)
                elif isinstance(action, CheckContainer):
                    await self.hub.check_container(d, action.container_id, lambda line: None)
        raise AssertionError(f"did not converge: {done}")


def remove_hub_containers(name: str = NAME) -> None:
    for each in (name, f"{name}-previous", f"{name}-next"):
        subprocess.run([DOCKER, "rm", "-f", each], capture_output=True)


def container_id() -> str:
    return subprocess.run([DOCKER, "inspect", "-f", "{{.Id}}", NAME], capture_output=True, text=True).stdout.strip()


def container_logs(tail: int | None = None, name: str = NAME) -> str:
    """The hub test container's output (stdout and stderr), its last `tail` lines if given."""
    args = [DOCKER, "logs", *(["--tail", str(tail)] if tail else []), name]
    done = subprocess.run(args, capture_output=True, text=True)
    return done.stdout + done.stderr


def login(user: str, password: str, base: str = BASE) -> HubSession:
    session = HubSession(base, timeout=120)  # the machine may be busy with other work
    assert session.login(user, password) == 302, f"{user} could not log in"
    return session


def start_kernel(session: HubSession, user: str, name: str = "python3") -> str:
    assert session.wait_lab(user, 180) == 200, container_logs(40)
    status, _, body = session.request("POST", f"/user/{user}/api/kernels", {"name": name})
    assert status == 201, body[:300]
    return json.loads(body)["id"]
