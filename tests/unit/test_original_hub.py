"""Coming from Conjuring, the hub image and container side (issue 13, items 4-7).

Kernel names as the original's env2conda.sh gave them, bases whose Python is too old
(known tags at validate time, any base at build time), all of srv/ in the hub's working
folder, and conjuring/docker-compose.override.yml reported with the keys that replace it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import docker.errors
import pytest

from conjuringd.adapters import docker_build
from conjuringd.adapters.docker_labels import container_resources
from conjuringd.adapters.hub_files import mirror_tree
from conjuringd.config import bases
from conjuringd.config.load import load_custom
from conjuringd.config.model import HubSettings
from conjuringd.config.problems import BuildFailed, Severity
from conjuringd.config.settings import parse_settings
from conjuringd.hashing import restart_digest
from conjuringd.hub.dockerfile import RUNTIME_SRC, render
from conjuringd.reconcile.execute import PassLog
from conjuringd.sticks.session import compose_notes
from tests.unit.conftest import VALID_USERS, write_tree

ENV = "channels: [conda-forge]\ndependencies:\n  - numpy\n"


def _load(make_custom, files):
    config, problems = load_custom(make_custom(files))
    assert config is not None, [str(p) for p in problems]
    return config, [str(p) for p in problems]


# --- 4. kernel names -------------------------------------------------------------------


@pytest.mark.parametrize("file, text, kernel", [
    ("environment-geo.yml", "name: geography\n" + ENV, "geography"),  # name: wins over the file name
    ("environment-geo.yml", ENV, "geo"),  # no name: the file's
    ("environment_geo.yml", ENV, "geo"),  # env2conda.sh also cut "environment_"
    ("environment.yml", "name: climate-2024\n" + ENV, "climate-2024"),  # a named environment.yml is a kernel
    ("environment-x.yml", "name: py3.11\n" + ENV, "py3.11"),  # conda and Jupyter allow dots
])
def test_an_extra_kernel_is_named_as_the_original_named_its_environment(make_custom, file, text, kernel):
    config, _ = _load(make_custom, {file: text})
    assert [k.name for k in config.kernels] == [kernel]
    assert config.environment == b""  # not the default kernel's
    dockerfile = render(config, "h").dockerfile
    assert f"--name {kernel} " in dockerfile, "the kernelspec name notebooks record in their metadata"
    assert f'--display-name "Python ({kernel})"' in dockerfile


@pytest.mark.parametrize("file, text", [
    ("environment.yml", ENV),
    ("environment.yml", "name: base\n" + ENV),
    ("environment-anything.yml", "name: base\n" + ENV),  # env2conda.sh updated base for it too
])
def test_an_environment_named_base_or_unnamed_environment_yml_is_the_default_kernel(make_custom, file, text):
    config, _ = _load(make_custom, {file: text})
    assert config.kernels == () and config.environment == text.encode()
    assert "--name python3 " in render(config, "h").dockerfile


def test_an_upper_case_name_is_the_lower_case_kernel_jupyter_makes_of_it(make_custom):
    config, problems = _load(make_custom, {"environment-a.yml": "name: GeoPy\n" + ENV})
    assert [k.name for k in config.kernels] == ["geopy"]
    assert problems == ["custom/environment-a.yml: warning: kernel 'GeoPy' is named 'geopy' (Jupyter lower-cases "
                        "kernel names; notebooks naming either find it)"]


def test_two_files_naming_the_same_environment_are_one_error(make_custom):
    config, problems = load_custom(make_custom({"environment-a.yml": "name: geo\n" + ENV, "environment-geo.yml": ENV}))
    assert config is None
    assert [str(p) for p in problems] == [
        "custom/environment-geo.yml: error: kernel 'geo' is defined twice: by environment-a.yml and by environment-geo.yml"]


# --- 5. bases whose Python is too old ---------------------------------------------------


@pytest.mark.parametrize("image, python", [
    ("ubuntu:18.04", (3, 6)), ("ubuntu:bionic", (3, 6)), ("docker.io/library/ubuntu:20.04", (3, 8)),
    ("ubuntu:22.04", (3, 10)), ("debian:buster-slim", (3, 7)), ("debian:11", (3, 9)), ("debian:bullseye", (3, 9)),
    ("debian:bookworm", (3, 11)), ("debian:10.13", (3, 7)), ("python:3.9-slim", (3, 9)),
    ("casperdcl/conjuring:base", None), ("ubuntu:latest", None), ("debian", None),
])
def test_the_python_of_known_base_tags(image, python):
    assert bases.known_python(image) == python


@pytest.mark.parametrize("image, ok", [("ubuntu:18.04", False), ("ubuntu:20.04", False), ("python:3.8", False),
                                       ("debian:buster", False), ("debian:bullseye", True), ("python:3.9", True),
                                       ("ubuntu:22.04", True), ("debian:bookworm", True), ("debian:trixie", True),
                                       ("my/own:base", True)])
def test_validate_refuses_a_known_too_old_base_with_one_line(make_custom, image, ok):
    config, problems = load_custom(make_custom({"base.Dockerfile": f"# the original's\nFROM {image} AS base\nENV A=1\n"}))
    assert (config is not None) is ok
    if not ok:
        fix = "ubuntu:22.04" if image.startswith("ubuntu") else "debian:bookworm"
        have = "%d.%d" % bases.known_python(image)
        assert [str(p) for p in problems] == [
            f"custom/base.Dockerfile:2: error: base image {image} has Python {have}, but the hub needs Python 3.9 "
            f"or newer: use FROM {fix} in base.Dockerfile (or [hub] base_image = \"{fix}\")"]


def test_the_original_main_branch_base_dockerfile_is_refused_before_any_build(make_custom):
    config, problems = load_custom(make_custom({"base.Dockerfile": "FROM ubuntu:18.04 AS base\nENV LANG C.UTF-8\n"}))
    assert config is None
    assert [p.message for p in problems if p.severity is Severity.ERROR] == [
        'base image ubuntu:18.04 has Python 3.6, but the hub needs Python 3.9 or newer: use FROM ubuntu:22.04 '
        'in base.Dockerfile (or [hub] base_image = "ubuntu:22.04")']


def _check_command(config) -> str:
    lines = render(config, "h").dockerfile.splitlines()
    step = next(i for i, line in enumerate(lines) if bases.MARKER in line)
    assert lines[step - 1].startswith("ENV DEBIAN_FRONTEND") and lines[step - 2].startswith("FROM ")
    assert lines.index("# --- layer: certs") > step, "the check comes before anything is installed"
    return lines[step][len("RUN "):]


def test_the_build_checks_python_first_and_prints_the_one_line(make_custom, monkeypatch):
    config, _ = _load(make_custom, {"base.Dockerfile": "FROM my/own:base\n"})
    ok = subprocess.run(["sh", "-c", _check_command(config)], capture_output=True, text=True)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")  # this machine's python3 is new enough
    monkeypatch.setattr(bases, "MIN_PYTHON", (3, 99))
    old = subprocess.run(["sh", "-c", _check_command(config)], capture_output=True, text=True)
    have = subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True).stdout.strip()
    assert old.returncode == 1
    assert old.stdout == (f"{bases.MARKER} base image my/own:base has Python {have}, but the hub needs Python 3.99 "
                          'or newer: use FROM debian:bookworm in base.Dockerfile (or [hub] base_image = "debian:bookworm")\n')


def test_an_image_name_cannot_break_out_of_the_check(make_custom):
    config, _ = _load(make_custom, {"base.Dockerfile": "FROM a'$(touch /tmp/x)\n"})
    command = _check_command(config)
    assert "'$(" not in command and "$(touch" not in command


class _Images:
    def get(self, name):
        raise docker.errors.ImageNotFound(name)


class _Api:
    def __init__(self, chunks):
        self.chunks = chunks

    def build(self, **kwargs):
        return iter(self.chunks)


class _Client:
    def __init__(self, chunks):
        self.api, self.images = _Api(chunks), _Images()


class _Desired:
    class hashes:
        image = "f" * 64


def _build(make_custom, chunks):
    config, _ = _load(make_custom, {"base.Dockerfile": "FROM old/python:3.8\n"})
    with pytest.raises(BuildFailed) as failed:
        docker_build.build(_Client(chunks), _Desired, render(config, "h"), lambda line: None)
    return failed.value


def test_a_failed_base_check_is_one_line_on_the_report(make_custom):
    line = "base image old/python:3.8 has Python 3.8, but the hub needs Python 3.9 or newer: use FROM debian:bookworm"
    failure = _build(make_custom, [
        {"stream": "Step 1/30 : FROM old/python:3.8\n"}, {"stream": "Step 3/30 : RUN { command -v python3 ... "
                                                                    f"{bases.MARKER} base image ...\n"},
        {"stream": f"{bases.MARKER} {line}\n"},
        {"error": "The command '/bin/sh -c ...' returned a non-zero code: 1", "errorDetail": {"message": "x"}},
    ])
    assert failure.step == f"step 3/30 (base): {line}" and failure.log_tail == (line,)


def test_a_later_failure_is_not_blamed_on_the_base_check(make_custom):
    failure = _build(make_custom, [
        {"stream": f"Step 3/30 : RUN {{ command -v python3 ... {bases.MARKER} base image ...\n"},
        {"stream": "Step 9/30 : RUN apt-get install nope\n"}, {"stream": "E: Unable to locate package nope\n"},
        {"error": "returned a non-zero code: 100"},
    ])
    assert failure.step.startswith("step 9/30 (core): RUN apt-get install nope")
    assert "E: Unable to locate package nope" in failure.log_tail


# --- 6. all of srv/ ---------------------------------------------------------------------


def test_every_file_of_srv_is_configuration(make_custom):
    files = {"srv/jupyterhub_config.py": "c.JupyterHub.ssl_key = '/srv/jupyterhub/my.key'\n", "srv/my.key": "KEY\n",
             "srv/certs/my.crt": "CRT\n", "srv/jupyterhub.sqlite": "not the hub's"}
    config, problems = _load(make_custom, files)
    assert [path for path, _ in config.srv.files] == ["certs/my.crt", "jupyterhub_config.py", "my.key"]
    assert problems == ["custom/srv/jupyterhub.sqlite: warning: ignored: the hub keeps its own file of this name"]
    changed, _ = _load(make_custom, {**files, "srv/my.key": "NEW KEY\n"})
    assert restart_digest(changed) != restart_digest(config), "a new key restarts the hub"


def test_srv_is_mirrored_root_only(tmp_path):
    write_tree(tmp_path / "src", {"my.key": "KEY", "sub/a.pem": "A"})
    dst = tmp_path / "run" / "srv"
    write_tree(dst, {"gone.txt": "old"})
    assert mirror_tree(tmp_path / "src", dst, 0o600, 0o700) == 3
    modes = {p.relative_to(dst).as_posix(): p.stat().st_mode & 0o777 for p in [dst, *dst.rglob("*")]}
    assert modes == {".": 0o700, "my.key": 0o600, "sub": 0o700, "sub/a.pem": 0o600}


def _srvcopy(monkeypatch, source: Path, target: Path):
    spec = importlib.util.spec_from_file_location("srvcopy", RUNTIME_SRC / "srvcopy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SOURCE", source)
    monkeypatch.setattr(module, "TARGET", target)
    module.main()


@pytest.mark.skipif(os.geteuid() != 0, reason="the hub's copy chowns to root")
def test_the_entrypoint_copies_srv_into_the_working_folder_and_forgets_what_was_removed(tmp_path, monkeypatch):
    source, target = tmp_path / "srv", tmp_path / "jupyterhub"
    write_tree(source, {"my.key": "KEY", "extra/a.pem": "A", "jupyterhub.sqlite": "teacher's"})
    write_tree(target, {"jupyterhub.sqlite": "the hub's", "jupyterhub_cookie_secret": "s"})
    os.symlink("/etc/passwd", target / "link.txt")
    _srvcopy(monkeypatch, source, target)
    assert (target / "my.key").read_text() == "KEY" and (target / "extra" / "a.pem").read_text() == "A"
    assert (target / "jupyterhub.sqlite").read_text() == "the hub's"
    for path in (target, target / "my.key", target / "extra", target / "extra" / "a.pem"):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o700 if path.is_dir() else 0o600)
    (source / "my.key").unlink()
    _srvcopy(monkeypatch, source, target)
    assert not (target / "my.key").exists() and (target / "extra" / "a.pem").exists()
    assert (target / "jupyterhub_cookie_secret").read_text() == "s" and os.path.islink(target / "link.txt")
    assert json.loads((target / ".conjuring-srv.json").read_text()) == ["extra/a.pem"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the hub's copy chowns to root")
def test_a_link_planted_where_a_srv_file_goes_is_not_written_through(tmp_path, monkeypatch):
    source, target = tmp_path / "srv", tmp_path / "jupyterhub"
    write_tree(source, {"my.key": "KEY"})
    victim = write_tree(tmp_path / "victim", {"f": "untouched"}) / "f"
    target.mkdir()
    os.symlink(victim, target / "my.key")
    with pytest.raises(OSError):
        _srvcopy(monkeypatch, source, target)
    assert victim.read_text() == "untouched"


# --- 7. docker-compose.override.yml, shm_size, gpus ----------------------------------


OVERRIDE = """services:
 conjuring:
  shm_size: 4gb
  ports: ["80:8000"]
  deploy: {resources: {reservations: {devices: [{driver: nvidia, count: all, capabilities: [gpu]}]}}}
"""


def test_an_override_beside_custom_is_reported_with_the_keys_that_replace_it(tmp_path):
    conjuring = tmp_path / "stick" / "conjuring"
    write_tree(conjuring, {"custom/users.csv": VALID_USERS, "docker-compose.override.yml": OVERRIDE,
                           "docker-compose.yml": "services: {}\n"})  # the original's own file: not the teacher's
    expected = ("is not executed by conjuringd; set these in conjuring.toml instead: devices -> [hub] gpus (in the "
                "machine's /etc/conjuring/conjuring.toml), ports -> [hub] port, shm_size -> [hub] shm_size")
    config, problems = load_custom(conjuring / "custom")
    assert config is not None
    assert [str(p) for p in problems] == [f"conjuring/docker-compose.override.yml: warning: {expected}"]
    assert compose_notes(conjuring) == [f"conjuring/docker-compose.override.yml: {expected}"]


def test_an_override_in_upper_case_on_fat_is_found_and_a_link_is_not_read(tmp_path):
    conjuring = write_tree(tmp_path / "CONJURING", {"DOCKER-COMPOSE.OVERRIDE.YML": OVERRIDE})
    assert len(compose_notes(conjuring)) == 1
    (conjuring / "DOCKER-COMPOSE.OVERRIDE.YML").unlink()
    os.symlink("/etc/shadow", conjuring / "docker-compose.override.yml")
    assert compose_notes(conjuring) == []


@pytest.mark.parametrize("value, ok", [('"4g"', True), ('"4gb"', True), ('"512M"', True), ('"1.5g"', True),
                                       ('"lots"', False), ("4", False)])
def test_shm_size_is_a_size_a_stick_may_set(value, ok):
    settings, problems = parse_settings(f"[hub]\nshm_size = {value}\n".encode(), "custom/conjuring.toml", machine=False)
    assert (problems == []) is ok
    assert (settings.hub.shm_size == value.strip('"')) is ok


def test_gpus_come_only_from_the_machine_file():
    text = b'[hub]\ngpus = "all"\n'
    settings, problems = parse_settings(text, "custom/conjuring.toml", machine=False)
    assert settings.hub.gpus == "" and [p.severity for p in problems] == [Severity.WARNING]
    assert "[hub] gpus ignored: it hands host devices (GPUs) to the hub" in problems[0].message
    settings, problems = parse_settings(text, "/etc/conjuring/conjuring.toml", machine=True)
    assert settings.hub.gpus == "all" and problems == []
    _, problems = parse_settings(b'[hub]\ngpus = "some"\n', "/etc/conjuring/conjuring.toml", machine=True)
    assert [p.severity for p in problems] == [Severity.ERROR]


def test_shm_size_and_gpus_reach_the_container_spec():
    assert container_resources(HubSettings()) == {}
    spec = container_resources(HubSettings(shm_size="4gb", gpus="all"))
    assert spec["shm_size"] == 4 * 1024**3
    assert [dict(r) for r in spec["device_requests"]] == [
        {"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    assert container_resources(HubSettings(gpus="2"))["device_requests"][0]["Count"] == 2


async def test_the_one_line_reaches_the_report_and_the_old_hub_keeps_serving(tmp_path):
    import shutil

    from conjuringd.paths import Paths
    from conjuringd.reconcile.execute import Adapters
    from conjuringd.reconcile.loop import Reconciler
    from conjuringd.reconcile.model import ImportOutcome
    from conjuringd.reconcile.triggers import Heartbeat, Triggers
    from conjuringd.status import StatusBoard
    from conjuringd.sticks.report import StickReport, render_report
    from conjuringd.store import SnapshotStore
    from tests.unit.test_reconciler import REPO, FakeHub, Silent

    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    shutil.copytree(REPO / "custom", paths.local_custom)
    hub = FakeHub()
    reconciler = Reconciler(SnapshotStore(paths), Adapters(hub=hub), StatusBoard(paths.status_file, Silent()),
                            Triggers(quiet=0.01), Heartbeat(), hub_enabled=True)
    await reconciler.run_pass(("startup",))
    serving = hub.container
    line = bases.too_old_message("my/old:base", "3.8")
    good_build = hub.build_image

    async def too_old(desired, progress):
        hub.calls.append("build")
        raise BuildFailed(desired.hashes.image, f"step 3/31 (base): {line}", (line,))

    hub.build_image = too_old
    (paths.local_custom / "base.Dockerfile").write_text("FROM my/old:base\n")
    await reconciler.run_pass(("local: edit",))
    assert hub.container == serving
    changes = reconciler.status.get("changes")
    assert f"image build FAILED at step 3/31 (base): {line}; the previous hub keeps serving" in changes
    facts = await reconciler._report_facts(PassLog(changes=changes, build_tail=(line,)))
    text = render_report(StickReport("t", "box", "/dev/sdz1", "STICK", "U", ImportOutcome("applied", "c" * 64), facts))
    assert text.count(line) == 2 and "Hub: build failed" in text  # in "What changed" and alone as the build's last line
    hub.build_image = good_build
