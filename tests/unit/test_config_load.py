"""load_custom on whole folders: the original format, the shipped default, every problem in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conjuringd.config import ConfigError, CustomConfig, Problem, load_custom
from conjuringd.config.model import FileTree
from conjuringd.config.problems import Severity

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
E, W = Severity.ERROR, Severity.WARNING
CERT = (DATA / "certs" / "test-ca.crt").read_bytes()


def where(problems: tuple[Problem, ...]) -> list[tuple[str, int, Severity]]:
    return [(p.file, p.line, p.severity) for p in problems]


def test_original_conjuring_folder_loads_without_problems():
    config, problems = load_custom(DATA / "original" / "custom")
    # only: foo and bar use the original's shipped example password "bar" (public: anyone can log in)
    assert [(p.file, p.line, p.severity.value) for p in problems] == [
        ("custom/users.csv", 2, "warning"), ("custom/users.csv", 3, "warning")]
    assert all("an example printed in a public repository" in p.message for p in problems)
    assert isinstance(config, CustomConfig)
    assert [(u.name, u.admin) for u in config.users] == [("foo", False), ("bar", False), ("teacher", True), ("ta", True)]
    assert config.apt_packages == ("git", "vim", "nano")
    assert config.base_image == "ubuntu:22.04"
    assert b"conda-forge" in config.environment and b"tqdm" in config.requirements
    assert [(k.name, k.kind, k.file) for k in config.kernels] == [("geo", "conda", "environment-geo.yml")]
    assert [path for path, _ in config.home_default.files] == [".bashrc", ".profile"]
    assert [path for path, _ in config.shared.files] == ["week1/notes.md"]
    assert b"default_url" in config.hub_config


def test_shipped_default_custom_loads_with_zero_problems():
    config, problems = load_custom(REPO / "custom")
    assert problems == ()
    assert [u.admin for u in config.users].count(True) == 1 and len(config.users) == 3
    assert all(u.generated and u.password == "" for u in config.users), "no password is shipped"
    assert config.apt_packages == ()
    assert b"numpy" in config.requirements
    assert [p for p, _ in config.shared.files] == ["welcome.ipynb"]
    assert [p for p, _ in config.home_default.files] == ["README.md"]


def test_shipped_welcome_notebook_is_a_valid_notebook():
    import json

    notebook = json.loads((REPO / "custom" / "shared" / "welcome.ipynb").read_text())
    assert notebook["nbformat"] == 4 and notebook["cells"]
    assert all(cell["cell_type"] in ("markdown", "code") for cell in notebook["cells"])


BROKEN = [
    ("custom/apt.txt", 2, E, "'Python3' is not a valid Debian package name (use lowercase)"),
    ("custom/apt.txt", 3, E, "'foo_bar' is not a valid Debian package name"),
    ("custom/base.Dockerfile", 0, E, "has no FROM line"),
    ("custom/certs/school.crt", 0, E, "is not a PEM certificate"),
    ("custom/conjuring.toml", 2, E, "unknown key 'prot' in [hub] (did you mean 'port'?)"),
    ("custom/conjuring.toml", 5, E, "a WPA passphrase needs 8 to 63 characters, this one has 5"),
    ("custom/docker-compose.override.yml", 0, W, "is not executed by conjuringd; set these in conjuring.toml instead: mem_limit -> [hub] mem_limit, ports -> [hub] port"),
    ("custom/enviroment.yml", 0, W, "unknown file: ignored (did you mean 'environment.yml'?)"),
    ("custom/environment-bad.yml", 2, E, "YAML syntax error"),
    ("custom/environment-empty.yml", 0, W, "has no 'dependencies:' list"),
    ("custom/environment-list.yml", 1, E, "should be a conda environment: a mapping with 'dependencies:'"),
    ("custom/requirements-x.txt", 0, E, "kernel 'x' is defined twice: by environment-x.yml and by requirements-x.txt"),
    ("custom/requirements.txt", 2, E, "cannot parse requirement 'numpy 1.2'"),
    ("custom/requirements.txt", 3, E, "'-r other.txt' includes another file, which cannot be followed"),
    ("custom/srv/jupyterhub_config.py", 1, E, "Python syntax error: '(' was never closed"),
    ("custom/users.csv", 3, E, "invalid user name 'Bad Name': no spaces"),
    ("custom/users.csv", 4, E, "user name 'root' is reserved"),
    ("custom/users.csv", 5, E, "duplicate user 'JANE', 'jane' in lower case (first on line 2)"),
    ("custom/users.csv", 6, E, "empty password for 'bob'"),
    ("custom/users.csv", 7, E, "the password of 'carl' contains a line break"),
    ("custom/users.csv", 9, W, "admin values other than 1, y, yes, t, true (or blank, 0, n, no, f, false) mean not admin ('maybe', 'b') [2 rows: line 9, 11]"),
    ("custom/users.csv", 10, E, "found one field"),
    ("custom/users.csv", 11, W, "columns after the third are ignored (4 fields), as the original Conjuring did"),
    ("custom/users.csv", 12, E, "is not valid UTF-8: byte 0xe9"),
    ("custom/users.csv", 13, E, "the password of 'hank' contains a NUL character"),
]


def test_seeded_folder_reports_every_problem_sorted_by_file_and_line():
    config, problems = load_custom(DATA / "broken" / "custom")
    assert config is None
    assert where(problems) == [(f, line, sev) for f, line, sev, _ in BROKEN]
    for problem, (_, _, _, message) in zip(problems, BROKEN):
        assert message in problem.message
    assert str(problems[0]) == "custom/apt.txt:2: error: 'Python3' is not a valid Debian package name (use lowercase)"
    assert str(problems[2]).startswith("custom/base.Dockerfile: error: has no FROM line")


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"requirements.txt": "numpy\n\nscipy >= 1.x\n"}, ("custom/requirements.txt", 3, E, "'1.x' is not a valid version")),
        ({"requirements-geo.txt": "-e ./pkg\n"}, ("custom/requirements-geo.txt", 1, E, "editable installs (-e) are not supported")),
        ({"apt.txt": "# c\n\ngit -y\n"}, ("custom/apt.txt", 3, E, "'-y' looks like an apt-get option")),
        ({"apt.txt": "git\nvim git\n"}, ("custom/apt.txt", 2, W, "package 'git' is listed twice (first on line 1)")),
        ({"environment.yml": "dependencies: numpy\n"}, ("custom/environment.yml", 1, E, "'dependencies' should be a list")),
        ({"environment.yml": "dependencies:\n  - numpy\n  - pip:\n    - ok\n    - bad name!\n"}, ("custom/environment.yml", 5, E, "pip: cannot parse requirement 'bad name!'")),
        ({"environment.yml": "dependencies:\n  - {conda: x}\n"}, ("custom/environment.yml", 2, E, "each dependency should be a conda package spec")),
        ({"environment.yml": "dependencies: [a]\n", "environment.yaml": "dependencies: [b]\n"}, ("custom/environment.yml", 0, E, "the default environment is defined twice: environment.yaml and environment.yml")),
        ({"environment-Geo.yml": "dependencies: [x]\n"}, ("custom/environment-Geo.yml", 0, W, "kernel 'Geo' is named 'geo' (Jupyter lower-cases")),
        ({"requirements-my+kernel.txt": "x\n"}, ("custom/requirements-my+kernel.txt", 0, E, "invalid kernel name 'my+kernel'")),
        ({"environment-x.yml": "name: my env\ndependencies: [x]\n"}, ("custom/environment-x.yml", 0, E, "invalid kernel name 'my env'")),
        ({"environment.yml": "dependencies: [a]\n", "environment-b.yml": "name: base\ndependencies: [b]\n"}, ("custom/environment.yml", 0, E, "the default environment is defined twice: environment-b.yml and environment.yml")),
        ({"base.Dockerfile": "# old\nFROM ubuntu:18.04\n"}, ("custom/base.Dockerfile", 2, E, "base image ubuntu:18.04 has Python 3.6, but the hub needs Python 3.9 or newer: use FROM ubuntu:22.04")),
        ({"conjuring.toml": '[hub]\nbase_image = "debian:buster"\n'}, ("custom/conjuring.toml", 0, E, "[hub] base_image: base image debian:buster has Python 3.7")),
        ({"requirements-python3.txt": "x\n"}, ("custom/requirements-python3.txt", 0, E, "kernel name 'python3' is reserved")),
        ({"environment_geo.yml": "dependencies: [x]\n", "environment-geo.yml": "dependencies: [y]\n"}, ("custom/environment_geo.yml", 0, E, "kernel 'geo' is defined twice: by environment-geo.yml and by environment_geo.yml")),
        ({"base.Dockerfile": "LABEL a=b\nFROM debian\n"}, ("custom/base.Dockerfile", 1, E, "LABEL before the first FROM")),
        ({"certs/key.crt": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, ("custom/certs/key.crt", 0, E, "contains a private key")),
        ({"certs/ca.pem": CERT}, ("custom/certs/ca.pem", 0, W, "ignored: not a .crt file")),
        ({"srv/jupyterhub.sqlite": "x"}, ("custom/srv/jupyterhub.sqlite", 0, W, "ignored: the hub keeps its own file")),
        ({"srv/jupyterhub_config.py": b"c = 1\x00\n"}, ("custom/srv/jupyterhub_config.py", 0, E, "null bytes")),
        ({"Users.csv": "x\n"}, ("custom/Users.csv", 0, W, "unknown file: ignored (did you mean 'users.csv'?)")),
        ({"notes.txt": "x\n"}, ("custom/notes.txt", 0, W, "unknown file: ignored")),
        ({"docker-compose.override.yml": ": bad: yaml: ["}, ("custom/docker-compose.override.yml", 0, W, "ports -> [hub] port, mem_limit -> [hub] mem_limit")),
        ({"docker-compose.override.yml": "services:\n  hub:\n    deploy:\n      resources:\n        limits:\n          memory: 1g\n"}, ("custom/docker-compose.override.yml", 0, W, "memory -> [hub] mem_limit")),
        ({"shared": "a file\n"}, ("custom/shared", 0, E, "should be a folder")),
        ({"srv": "a file\n"}, ("custom/srv", 0, E, "should be a folder")),
        ({"apt.txt/x": "git\n"}, ("custom/apt.txt", 0, E, "should be a file, not a folder")),
        ({"base.Dockerfile": b"FROM debian\nRUN echo \xff\n"}, ("custom/base.Dockerfile", 2, E, "is not valid UTF-8: byte 0xff at byte offset 21")),
        ({"users.csv": None}, ("custom/users.csv", 0, E, "is missing: the hub needs at least one user")),
    ],
)
def test_folder_problem(make_custom, files, expected):
    config, problems = load_custom(make_custom(files))
    assert where(problems) == [expected[:3]], problems
    assert expected[3] in problems[0].message
    assert (config is None) == (expected[2] is E)


def test_certs_are_loaded_sorted(make_custom):
    config, problems = load_custom(make_custom({"certs/b.crt": CERT, "certs/a.crt": CERT + CERT}))
    assert problems == ()
    assert [name for name, _ in config.certs] == ["a.crt", "b.crt"]
    assert config.certs[1][1] == CERT


def test_kernels_from_both_kinds(make_custom):
    config, problems = load_custom(make_custom({"requirements-stats.txt": "scipy\n", "environment-geo.yml": "dependencies: [gdal]\n"}))
    assert problems == ()
    assert [(k.name, k.kind, k.content) for k in config.kernels] == [
        ("geo", "conda", b"dependencies: [gdal]\n"), ("stats", "venv", b"scipy\n"),
    ]


@pytest.mark.parametrize(
    "name, size, limit",
    [("users.csv", 1024 * 1024 + 1, "1.0 MiB"), ("requirements.txt", 256 * 1024 + 1, "256 KiB"),
     ("requirements-x.txt", 256 * 1024 + 1, "256 KiB"), ("apt.txt", 256 * 1024 + 1, "256 KiB"),
     ("environment.yml", 1024 * 1024 + 1, "1.0 MiB"), ("srv/jupyterhub_config.py", 1024 * 1024 + 1, "1.0 MiB")],
)
def test_files_larger_than_their_limit(make_custom, name, size, limit):
    config, problems = load_custom(make_custom({name: b"#" * size}))
    problem = next(p for p in problems if p.file == f"custom/{name}")
    assert (problem.line, problem.severity) == (0, E)
    assert problem.message.startswith("is too large") and f"the limit is {limit}" in problem.message
    assert config is None


def test_tree_limits_come_from_the_machine_usb_section(make_custom, tmp_path):
    machine = tmp_path / "machine.toml"
    machine.write_text("[usb]\nmax_files = 3\n")
    folder = make_custom({"shared/a": "1", "shared/b": "2", "home_default/c": "3", "home_default/d": "4"})
    config, problems = load_custom(folder, machine)
    assert config is None
    assert where(problems) == [("custom/home_default/d", 0, E)]  # shared/ is counted first
    assert "too many files in shared/ and home_default/ (the limit is 3" in problems[0].message
    machine.write_text("[usb]\nmax_bytes = 3\n")
    config, problems = load_custom(folder, machine)
    assert config is None and where(problems) == [("custom/home_default/d", 0, E)]
    assert "shared/ and home_default/ are too large (the limit is 3 bytes" in problems[0].message
    machine.write_text("[usb]\nmax_files = 4\nmax_bytes = 4\n")
    assert load_custom(folder, machine)[1] == ()


def test_symlinks_are_skipped_with_a_warning_never_followed(make_custom, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside\n")
    folder = make_custom({"shared/ok.txt": "fine\n"})
    os.symlink(secret, folder / "shared" / "link.txt")
    os.symlink(tmp_path, folder / "home_default")
    os.symlink(secret, folder / "apt.txt")
    config, problems = load_custom(folder)
    assert config is not None
    assert where(problems) == [("custom/apt.txt", 0, W), ("custom/home_default", 0, W), ("custom/shared/link.txt", 0, W)]
    assert all("symbolic link: skipped" in p.message for p in problems)
    assert config.shared.files == (("ok.txt", config.shared.files[0][1]),)
    assert config.home_default == FileTree() and config.apt_packages == ()


def test_special_files_are_skipped(make_custom):
    folder = make_custom({"shared/ok.txt": "fine\n"})
    os.mkfifo(folder / "shared" / "pipe")
    config, problems = load_custom(folder)
    assert where(problems) == [("custom/shared/pipe", 0, W)]
    assert [p for p, _ in config.shared.files] == ["ok.txt"]


def test_hidden_files_and_home_backup_are_ignored_silently(make_custom):
    folder = make_custom({".DS_Store": b"\x00", "home_backup/x": "y", "README.md": "notes", "._users.csv": b"\x00\xff"})
    assert load_custom(folder)[1] == ()


def test_filetree_covers_nested_files_with_content_digests(make_custom):
    config, _ = load_custom(make_custom({"shared/b/c.txt": "c", "shared/a.txt": "a", "home_default/.bashrc": "x"}))
    import hashlib

    assert config.shared.files == (
        ("a.txt", hashlib.sha256(b"a").hexdigest()), ("b/c.txt", hashlib.sha256(b"c").hexdigest()),
    )


def test_missing_root_raises_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_custom(tmp_path / "absent")
    assert info.value.problems[0].file == "custom" and "cannot read the configuration folder" in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        load_custom(tmp_path / "file")


def test_unreadable_file_is_a_problem(make_custom, monkeypatch):
    folder = make_custom({"apt.txt": "git\n"})
    real_open = os.open

    def deny(path, *args, **kwargs):  # root reads any mode, so refuse like a chmod 0 file would
        if str(path).endswith("apt.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    config, problems = load_custom(folder)
    assert where(problems) == [("custom/apt.txt", 0, E)]
    assert problems[0].message == "cannot be read: Permission denied"


def test_warnings_alone_keep_the_config(make_custom):
    config, problems = load_custom(make_custom({"docker-compose.override.yml": "services: {}\n"}))
    assert config is not None and [p.severity for p in problems] == [W]


def test_loading_does_not_modify_the_folder(tmp_path):
    copy = shutil.copytree(DATA / "original" / "custom", tmp_path / "custom")
    before = sorted((p.relative_to(copy), p.read_bytes()) for p in copy.rglob("*") if p.is_file())
    load_custom(copy)
    assert sorted((p.relative_to(copy), p.read_bytes()) for p in copy.rglob("*") if p.is_file()) == before


def test_a_crashing_check_becomes_an_error_not_an_exception(make_custom, monkeypatch):
    from conjuringd.config import checks

    def boom(text, file):
        raise KeyError("bug")

    monkeypatch.setattr(checks, "check_apt", boom)
    config, problems = load_custom(make_custom({"apt.txt": "git\n"}))
    assert config is None
    assert where(problems) == [("custom/apt.txt", 0, E)]
    assert problems[0].message == "internal error while checking this file (KeyError); please report it"
