import os
import socket
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
    with pytest.raises(TreeTooLarge, match="11 files"):
        safe_copy(src, tmp_path / "dst", CopyLimits(max_files=10))
    assert not (tmp_path / "dst").exists()


def test_too_many_bytes_refuses_the_whole_tree(tmp_path):
    src = tree(tmp_path / "src", {"a": b"x" * 600, "b": b"y" * 600})
    with pytest.raises(TreeTooLarge, match="1200 bytes"):
        safe_copy(src, tmp_path / "dst", CopyLimits(max_bytes=1000))


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
