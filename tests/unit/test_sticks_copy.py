import os
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conjuringd.sticks.copy import CopyLimits, TreeTooLarge, safe_copy, utf8_name

SECRET = b"root:$6$very-secret-hash:19000:0:99999:7:::\n"


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def test_copies_regular_tree(tmp_path):
    src = tree(tmp_path / "src", {"users.csv": b"name,password,admin\n", "shared/a/b.txt": b"hello", "empty": b""})
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits())
    assert refusals == []
    assert (tmp_path / "dst/shared/a/b.txt").read_bytes() == b"hello"
    assert (tmp_path / "dst/users.csv").read_bytes() == b"name,password,admin\n"
    assert (tmp_path / "dst/empty").read_bytes() == b""


def test_symlinks_never_followed(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "shadow").write_bytes(SECRET)
    src = tree(tmp_path / "src", {"shared/ok.txt": b"ok"})
    (src / "shared" / "passwd").symlink_to(host / "shadow")
    (src / "shared" / "etc").symlink_to(host)  # a directory link
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits())
    assert SECRET not in all_bytes(tmp_path / "dst")
    assert not (tmp_path / "dst/shared/passwd").exists() and not (tmp_path / "dst/shared/etc").exists()
    text = "\n".join(map(str, refusals))
    assert "shared/passwd: symbolic link" in text and str(host / "shadow") in text
    assert "shared/etc: symbolic link" in text


def test_hard_link_to_outside_file_refused(tmp_path):
    outside = tmp_path / "shadow"
    outside.write_bytes(SECRET)
    src = tree(tmp_path / "src", {"shared/x": b"x"})
    os.link(outside, src / "shared" / "copy-of-shadow")
    inside = src / "shared" / "x2"
    os.link(src / "shared" / "x", inside)  # links within the tree are fine
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits())
    assert SECRET not in all_bytes(tmp_path / "dst")
    assert [r.path for r in refusals] == ["shared/copy-of-shadow"]
    assert (tmp_path / "dst/shared/x2").read_bytes() == b"x"


def test_fifo_socket_and_device_refused_without_blocking(tmp_path):
    src = tree(tmp_path / "src", {"shared/ok": b"ok"})
    os.mkfifo(src / "shared" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "shared" / "sock"))
    os.mknod(src / "shared" / "null", 0o600 | 0o020000, os.makedev(1, 3))
    try:
        refusals = {r.path: r.reason for r in safe_copy(src, tmp_path / "dst", CopyLimits())}
    finally:
        sock.close()
    assert "FIFO" in refusals["shared/pipe"]
    assert "socket" in refusals["shared/sock"]
    assert "character device" in refusals["shared/null"]
    assert sorted(os.listdir(tmp_path / "dst/shared")) == ["ok"]


def test_sparse_file_counts_by_apparent_size(tmp_path):
    src = tree(tmp_path / "src", {"users.csv": b"x"})
    with open(src / "big.img", "wb") as f:
        f.truncate(2 * 10**9)
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits(max_bytes=10**9))
    assert [r.path for r in refusals] == ["big.img"] and "2000000000 bytes" in refusals[0].reason
    assert not (tmp_path / "dst/big.img").exists()


def test_sparse_file_within_limit_stays_sparse(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(50 * 2**20)
        f.write(b"end")
    safe_copy(src, tmp_path / "dst", CopyLimits())
    out = tmp_path / "dst/sparse"
    assert out.stat().st_size == 50 * 2**20 + 3
    assert out.stat().st_blocks * 512 < 2**20
    with open(out, "rb") as f:
        f.seek(50 * 2**20)
        assert f.read() == b"end"


def test_too_many_files_refuses_the_whole_tree(tmp_path):
    src = tree(tmp_path / "src", {f"f{i}": b"." for i in range(11)})
    with pytest.raises(TreeTooLarge, match="more than the limit of 10 "):
        safe_copy(src, tmp_path / "dst", CopyLimits(max_files=10))
    assert not (tmp_path / "dst").exists()


def test_too_many_bytes_refuses_the_whole_tree(tmp_path):
    src = tree(tmp_path / "src", {"a": b"x" * 60000, "b": b"y" * 60000})
    with pytest.raises(TreeTooLarge, match=r"^1\d{5} bytes would be imported, more than the limit of 100000"):
        safe_copy(src, tmp_path / "dst", CopyLimits(max_bytes=100000))
    assert not (tmp_path / "dst").exists()


def test_non_utf8_names(tmp_path):
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "shared" / os.fsdecode(b"\xdcbung.txt")).write_bytes(b"latin1")
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits())
    assert (tmp_path / "dst/shared/Übung.txt").read_bytes() == b"latin1"
    assert "not UTF-8" in refusals[0].reason and refusals[0].path == "shared/\\xdcbung.txt"
    for p in (tmp_path / "dst").rglob("*"):
        str(p).encode("utf-8")  # every name in the copy is valid UTF-8


def test_non_utf8_name_colliding_is_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / os.fsdecode(b"\xdcbung")).write_bytes(b"1")
    (src / "Übung").write_bytes(b"2")
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits())
    assert (tmp_path / "dst/Übung").read_bytes() == b"2"
    assert "clashes" in refusals[0].reason


def test_exclude_top_level_case_insensitive(tmp_path):
    src = tree(tmp_path / "src", {"HOME_BACKUP/alice.tar": b"t", "shared/home_backup/keep": b"k", "users.csv": b"u"})
    safe_copy(src, tmp_path / "dst", CopyLimits(exclude=frozenset({"home_backup"})))
    assert not (tmp_path / "dst/HOME_BACKUP").exists()
    assert (tmp_path / "dst/shared/home_backup/keep").exists()


def test_read_error_mid_copy_propagates(tmp_path):
    src = tree(tmp_path / "src", {f"f{i}": b"." for i in range(5)})

    def pull(n):
        if n == 2:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        safe_copy(src, tmp_path / "dst", CopyLimits(), on_file=pull)


def test_utf8_name():
    assert utf8_name("abc") == "abc"
    assert utf8_name(os.fsdecode(b"caf\xe9")) == "café"


names = st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..")
)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.lists(names, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=8))
def test_copy_is_faithful_for_any_regular_tree(tmp_path_factory, files):
    base = tmp_path_factory.mktemp("h")
    src = base / "src"
    src.mkdir()
    expected = {}
    for parts, data in files.items():
        path = src.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
    for path in src.rglob("*"):
        if path.is_file():
            expected[path.relative_to(src).as_posix()] = path.read_bytes()
    assert safe_copy(src, base / "dst", CopyLimits()) == []
    got = {p.relative_to(base / "dst").as_posix(): p.read_bytes() for p in (base / "dst").rglob("*") if p.is_file()}
    assert got == expected


def test_fold_case_gives_known_names_their_spelling(tmp_path):
    src = tree(tmp_path / "src", {"USERS.CSV": b"u", "SHARED/NOTES.TXT": b"n", "SRV/JUPYTERHUB_CONFIG.PY": b"c",
                                  "CERTS/SCHOOL.CRT": b"pem", "REQUIREMENTS-ML.TXT": b"numpy", "BASE.DOCKERFILE": b"FROM x"})
    assert safe_copy(src, tmp_path / "dst", CopyLimits(fold_case=True)) == []
    got = sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*") if p.is_file())
    assert got == ["base.Dockerfile", "certs/SCHOOL.crt", "requirements-ml.txt", "shared/NOTES.TXT",
                   "srv/jupyterhub_config.py", "users.csv"]


def test_fold_case_collision_keeps_one(tmp_path):
    src = tree(tmp_path / "src", {"USERS.CSV": b"upper", "users.csv": b"lower"})
    refusals = safe_copy(src, tmp_path / "dst", CopyLimits(fold_case=True))
    assert len(refusals) == 1 and len(list((tmp_path / "dst").iterdir())) == 1


def test_junk_from_other_systems_is_skipped_silently(tmp_path):
    src = tree(tmp_path / "src", {"users.csv": b"u", "._users.csv": b"\x00\x05\x16\x07", ".DS_Store": b"x",
                                  "shared/Thumbs.db": b"t", "shared/.hidden.txt": b"kept"})
    assert safe_copy(src, tmp_path / "dst", CopyLimits()) == []
    got = sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*") if p.is_file())
    assert got == ["shared/.hidden.txt", "users.csv"]


def test_max_files_counts_folders_and_links_too(tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        (src / f"d{i}").mkdir(parents=True)
        (src / f"d{i}" / "l").symlink_to("/etc/passwd")
        (src / f"l{i}").symlink_to("/etc/passwd")
    with pytest.raises(TreeTooLarge, match="more than 5 entries") as raised:  # 2 folders + 4 links, no file
        safe_copy(src, tmp_path / "dst", CopyLimits(max_files=5))
    assert {r.path for r in raised.value.refusals} == {"d0/l", "d1/l", "l0"}  # refused before the limit: named
    assert not (tmp_path / "dst").exists()


def deep_tree(root: Path, depth: int) -> None:
    """root/d/d/d/... `depth` folders deep, built relative to descriptors (the path is longer than PATH_MAX)."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(depth):
        if level == 5:
            with open(os.open("shallow.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                f.write(b"at level 5")
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(fd)


def remove_deep(root: Path) -> None:
    """rm -r for a tree deeper than shutil.rmtree (recursive in Python 3.11) can remove."""
    subprocess.run(["rm", "-rf", str(root)], check=True)


@pytest.fixture
def deep_src(tmp_path):
    deep_tree(tmp_path / "src", 1500)  # the recursive walk raised RecursionError at about 1000
    yield tmp_path / "src"
    remove_deep(tmp_path / "src")


def test_deep_tree_is_walked_iteratively_and_cut_at_the_depth_limit(tmp_path, deep_src):
    refusals = safe_copy(tmp_path / "src", tmp_path / "dst", CopyLimits(max_depth=64))
    assert len(refusals) == 1 and refusals[0].path == "/".join(["d"] * 65)
    assert "nested more than 64 levels deep" in refusals[0].reason
    assert (tmp_path / "dst" / Path(*["d"] * 5) / "shallow.txt").read_bytes() == b"at level 5"
    fd = os.open(tmp_path / "dst", os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    while "d" in os.listdir(fd):
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd, depth = sub, depth + 1
    os.close(fd)
    assert depth == 64


def hostile_shared(src: Path, sparse: int) -> None:
    tree(src, {"users.csv": b"name,password,admin\nana,pw,\n", "shared/welcome.txt": b"hello"})
    (src / "shared" / "passwords").symlink_to("/etc/shadow")
    (src / "shared" / "etc").symlink_to("/etc")
    os.mkfifo(src / "shared" / "pipe")
    with open(src / "shared" / "huge.bin", "wb") as f:
        f.truncate(sparse)


def test_one_file_too_big_is_one_refused_file_and_every_refusal_is_named(tmp_path):
    hostile_shared(tmp_path / "src", 2 * 1024**3)  # exactly the default total limit, over the per-file one
    refusals = {r.path: r.reason for r in safe_copy(tmp_path / "src", tmp_path / "dst", CopyLimits())}
    assert refusals["shared/huge.bin"].startswith("2147483648 bytes (0 bytes on disk: a sparse file), more than the limit for one file")
    assert "symbolic link to '/etc/shadow'" in refusals["shared/passwords"]
    assert "symbolic link to '/etc'" in refusals["shared/etc"]
    assert "FIFO" in refusals["shared/pipe"]
    assert sorted(os.listdir(tmp_path / "dst/shared")) == ["welcome.txt"]


def test_over_the_total_the_refusal_still_names_every_refused_entry(tmp_path):
    hostile_shared(tmp_path / "src", 10)
    (tmp_path / "src/shared/big1.txt").write_bytes(b"x" * 120000)
    (tmp_path / "src/shared/big2.txt").write_bytes(b"x" * 120000)
    with pytest.raises(TreeTooLarge, match="bytes would be imported") as raised:
        safe_copy(tmp_path / "src", tmp_path / "dst", CopyLimits(max_bytes=200000))
    assert {r.path for r in raised.value.refusals} == {"shared/passwords", "shared/etc", "shared/pipe"}
    assert not (tmp_path / "dst").exists()


def test_a_file_that_grows_after_the_scan_is_not_copied(tmp_path, monkeypatch):
    from conjuringd.sticks import copy as copy_mod
    src = tree(tmp_path / "src", {"shared/a.txt": b"small"})
    real = copy_mod.scan_tree

    def scan_then_grow(fd, limits):
        scan = real(fd, limits)
        (src / "shared/a.txt").write_bytes(b"much bigger now" * 1000)  # limits were checked on the old size
        return scan

    monkeypatch.setattr(copy_mod, "scan_tree", scan_then_grow)
    with pytest.raises(OSError, match="changed while copying"):
        safe_copy(src, tmp_path / "dst", CopyLimits())
