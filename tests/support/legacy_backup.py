"""Backups in the original Conjuring's formats as an attacker would write them (home.tar)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

MTIME = 1_650_000_000


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if fields.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    info.mtime = MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def hostile_tar(path: Path, outside: Path) -> None:
    """What an attacker's stick could carry as home_backup/home.tar."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        add(tar, "ana", type=tarfile.DIRTYPE, mode=0o7777, uid=0, gid=0)
        add(tar, "ana/rootshell", b"#!/bin/sh\nexec /bin/sh -p\n", mode=0o6755, uid=0, gid=0)
        add(tar, "../escaped", b"x", mode=0o644)
        add(tar, "ana/../../escaped2", b"x", mode=0o644)
        add(tar, f"{outside}/absolute", b"x", mode=0o644)
        add(tar, "ana/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add(tar, "ana/disk", type=tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666)
        add(tar, "ana/pipe", type=tarfile.FIFOTYPE, mode=0o666)
        add(tar, "ana/shadow", type=tarfile.LNKTYPE, linkname="/etc/shadow", mode=0o644)
        add(tar, "ana/up", type=tarfile.LNKTYPE, linkname="../../outside/secret", mode=0o644)
        add(tar, "ben/secret", b"ben's own", mode=0o600)
        add(tar, "ana/bens", type=tarfile.LNKTYPE, linkname="ben/secret", mode=0o644)
        add(tar, "ana/copy", type=tarfile.LNKTYPE, linkname="ana/rootshell", mode=0o4755)
        add(tar, "ana/out", type=tarfile.SYMTYPE, linkname=str(outside), mode=0o777)
        add(tar, "ana/out/planted", b"through the link", mode=0o644)
        add(tar, "toplevel-file", b"x", mode=0o644)
