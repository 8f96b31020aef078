"""The snapshot store: immutable validated copies of configurations, and the active pointer.

Import = copy into a private temp folder, validate the copy, hash it, rename it
to `configs/<hash>/`, then flip `active` in state.json (atomic write). Anything
that fails or is interrupted before the flip leaves the previous active
configuration exactly as it was.

A stick's folder (and `conjuringctl apply PATH`) is merged onto the active
configuration file by file unless it declares itself complete (conjuringd/merge.py);
the merged result is what is validated, hashed and snapshotted.

Snapshots hold the teacher's clear-text users.csv: `configs/` and every
snapshot folder are root-only (0700), their files read-only (0400).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import structlog

from conjuringd.atomic import fsync_dir
from conjuringd.config.load import load_custom
from conjuringd.config.machine import MachineSource
from conjuringd.config.problems import has_errors
from conjuringd.hashing import StreamDigest
from conjuringd.merge import MergeSummary, find_marker, is_marker, plan_merge
from conjuringd.paths import Paths
from conjuringd.reconcile.model import ImportOutcome
from conjuringd.state import StateFile

log = structlog.get_logger(__name__)

# a stick's backup request and the original's student homes (custom/home) are not configuration
EXCLUDED_TOP = frozenset({"home_backup", "home"})
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o400
CopyHook = Callable[[Path], None]  # called before each file is copied (tests inject faults)


def iter_config_files(root: Path) -> Iterator[Path]:
    """Regular files below root, sorted, never through symlinks, without excluded folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in EXCLUDED_TOP]
            filenames = [f for f in filenames if not is_marker(f)]  # "this stick is complete": not configuration
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not (here / d).is_symlink())
        for name in sorted(filenames):
            path = here / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def config_digest(root: Path) -> str:
    """Content digest of a configuration folder: relative paths and file contents only."""
    d = StreamDigest()  # files are streamed: a 1 GiB file is not read into memory
    for path in iter_config_files(root):
        d.part(os.fsencode(path.relative_to(root).as_posix()))
        d.file(path)
    return d.hexdigest()


class SnapshotStore:
    def __init__(self, paths: Paths, keep: int = 5, copy_hook: CopyHook | None = None):
        self.paths = paths
        self.keep = keep
        self.state = StateFile(paths.state_file)
        self.machine = MachineSource(paths.machine_toml, paths.machine_good)
        self._copy_hook = copy_hook

    def snapshot_dir(self, config_hash: str) -> Path:
        return self.paths.configs / config_hash

    def import_folder(self, source_dir: Path, source: dict, *, merge: bool = False) -> ImportOutcome:
        """Validate and activate a copy of `source_dir`: the folder as it is, or (`merge`) the active
        configuration with the folder's files laid over it, unless the folder holds the COMPLETE
        marker. Blocking: run it in an executor."""
        self.paths.configs.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(self.paths.configs, PRIVATE_DIR)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self.paths.configs))  # 0700 from the start
        try:
            files, summary = self._files_to_import(Path(source_dir), merge)
            if files is None:
                return ImportOutcome("failed", message="the active configuration's snapshot is missing, so a partial "
                                     "configuration cannot be merged onto it: apply a complete one (COMPLETE marker)")
            if summary is not None and not summary.from_source and not summary.complete:
                # nothing to lay over the active configuration: not an "unchanged" that earns a home backup
                return ImportOutcome("invalid", merge=summary, message="no configuration file on this stick's "
                                     "conjuring/custom (empty, or every file was skipped): nothing imported")
            self._copy_files(files, tmp)
            config, problems = load_custom(tmp, self.machine.current())
            if config is None or has_errors(problems):
                return ImportOutcome("invalid", problems=problems, message=f"{len(problems)} problem(s)", merge=summary)
            config_hash = config_digest(tmp)
            if config_hash == self.state.read().active:
                return ImportOutcome("unchanged", config_hash, problems, merge=summary)
            self._publish(tmp, config_hash)
            self.state.update(active=config_hash, active_source={**source, "at": time.time()})
            log.info("config_activated", config=config_hash[:12], source=source.get("kind"),
                     **({"merge": summary.counts()} if summary else {}))
            self.prune()
            return ImportOutcome("applied", config_hash, problems, merge=summary)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def preview(self, source_dir: Path, *, merge: bool = True) -> Iterator[tuple[Path | None, MergeSummary | None]]:
        """What importing `source_dir` would validate, in a temp folder (removed after), without
        activating anything (`conjuringctl plan`); (None, None) when there is nothing to merge onto."""
        with tempfile.TemporaryDirectory(prefix="conjuring-preview-") as tmp:
            files, summary = self._files_to_import(Path(source_dir), merge)
            if files is None:
                yield None, None
                return
            for rel, path in sorted(files.items()):
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, Path(tmp) / rel, follow_symlinks=False)
            yield Path(tmp), summary

    def _files_to_import(self, src: Path, merge: bool) -> tuple[dict[str, Path] | None, MergeSummary | None]:
        """{relative path: file to copy}, and where each came from when merging (None: the active
        snapshot is gone, nothing to merge onto)."""
        incoming = _files_of(src)
        if not merge:
            return incoming, None
        marker = find_marker(src)
        active = self.state.read().active
        folder = self.snapshot_dir(active) if active else None
        if folder is not None and not folder.is_dir():
            log.error("active_snapshot_missing", config=active[:12])
            if not marker:
                return None, None
            folder = None
        base = _files_of(folder) if folder is not None else {}
        return plan_merge(base, incoming, complete=bool(marker), marker=marker)

    def _copy_files(self, files: dict[str, Path], dst: Path) -> None:
        for rel, path in sorted(files.items()):
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if self._copy_hook:
                self._copy_hook(path)
            shutil.copyfile(path, target, follow_symlinks=False)
            with open(target, "rb") as handle:
                os.fsync(handle.fileno())

    def _publish(self, tmp: Path, config_hash: str) -> None:
        final = self.snapshot_dir(config_hash)
        if final.exists():
            return  # identical content, imported before: reuse it
        _make_private(tmp)
        os.rename(tmp, final)
        fsync_dir(self.paths.configs)

    def activate_existing(self, config_hash: str, source: dict) -> None:
        self.state.update(active=config_hash, active_source={**source, "at": time.time()})

    def mark_good(self, config_hash: str) -> None:
        if self.state.read().last_good != config_hash:
            self.state.update(last_good=config_hash)

    def snapshots(self) -> list[Path]:
        """Published snapshots, newest first."""
        if not self.paths.configs.is_dir():
            return []
        return sorted(
            (p for p in self.paths.configs.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )

    def prune(self) -> list[str]:
        """Keep the newest `keep` snapshots plus the active and last-good ones."""
        state = self.state.read()
        protected = {state.active, state.last_good}
        removed = []
        for old in self.snapshots()[self.keep :]:
            if old.name not in protected:
                _rmtree_readonly(old)
                removed.append(old.name)
        return removed

    def clean_leftovers(self) -> None:
        """Remove temp folders of imports that were interrupted (crash, power loss); make snapshots
        published by older versions (0444 files in 0755 folders) root-only."""
        if self.paths.configs.is_dir():
            os.chmod(self.paths.configs, PRIVATE_DIR)
            for leftover in self.paths.configs.glob(".*"):
                _rmtree_readonly(leftover)
            for snapshot in self.snapshots():
                _make_private(snapshot)


def _files_of(root: Path) -> dict[str, Path]:
    return {path.relative_to(root).as_posix(): path for path in iter_config_files(root)}


def _make_private(folder: Path) -> None:
    """Folders 0700, files 0400, below and including `folder` (links are not followed)."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, PRIVATE_DIR)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, PRIVATE_FILE)


def _rmtree_readonly(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        os.chmod(root, PRIVATE_DIR)
    shutil.rmtree(path, ignore_errors=True)
