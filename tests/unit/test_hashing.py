"""Content hashes: each file class of DESIGN.md section 3 changes exactly the hashes it should.

image  = every image input, chained per layer (the first changed layer is where a rebuild starts)
restart = srv/jupyterhub_config.py and the [hub] settings the running hub uses
users  = users.csv (live), files = shared/ + home_default/ (live)
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from conjuringd.config.load import load_custom
from conjuringd.config.model import FileTree
from conjuringd.hashing import changed_layers, config_hashes, tree_digest
from conjuringd.reconcile.model import ConfigHashes

DATA = Path(__file__).parent / "data"
CERT = (DATA / "certs" / "test-ca.crt").read_bytes()
LIVE_AND_RESTART = ("restart", "users", "files")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = shutil.copytree(DATA / "original" / "custom", tmp_path / "custom")
    (folder / "certs").mkdir()
    (folder / "certs" / "school.crt").write_bytes(CERT)
    (folder / "requirements-stats.txt").write_text("scipy\n")
    (folder / "conjuring.toml").write_text("[hub]\nport = 8989\nmem_limit = \"1G\"\n")
    return folder


def hashes(folder: Path) -> ConfigHashes:
    config, problems = load_custom(folder)
    assert config is not None, problems
    return config_hashes(config, "")


def changed(before: ConfigHashes, after: ConfigHashes) -> set[str]:
    return {name for name in ("image", "restart", "users", "files") if getattr(before, name) != getattr(after, name)}


def edit(folder: Path, rel: str, content: str | bytes | None) -> None:
    path = folder / rel
    if content is None:
        path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


LAYERS = ["base", "certs", "core", "apt", "environment", "kernel:geo", "kernel:stats", "requirements", "runtime"]


@pytest.mark.parametrize(
    "rel, content, first_layer",
    [
        ("base.Dockerfile", "FROM debian:bookworm\n", "base"),
        ("certs/school.crt", CERT + CERT, "certs"),
        ("certs/other.crt", CERT, "certs"),
        ("certs/school.crt", None, "certs"),
        ("apt.txt", "git\nvim nano\ngraphviz\n", "apt"),
        ("environment.yml", "dependencies:\n  - numpy\n", "environment"),
        ("environment-geo.yml", "dependencies:\n  - gdal\n", "kernel:geo"),
        ("requirements-stats.txt", "scipy\nstatsmodels\n", "kernel:stats"),
        ("requirements.txt", "tqdm\nrequests>=2.26\n", "requirements"),
        ("conjuring.toml", '[hub]\nport = 8989\nmem_limit = "1G"\nbase_image = "debian:trixie"\n', "base"),
    ],
)
def test_image_inputs_change_the_image_from_their_layer_only(base, rel, content, first_layer):
    before = hashes(base)
    assert [name for name, _ in before.layers] == LAYERS
    edit(base, rel, content)
    after = hashes(base)
    assert changed(before, after) == {"image"}
    rebuilt = changed_layers(before.layers, after.layers)
    assert rebuilt[0] == first_layer
    assert rebuilt == tuple(LAYERS[LAYERS.index(first_layer):])  # everything above it, nothing below
    assert after.image == after.layers[-1][1]


def test_a_new_kernel_adds_its_layer_and_keeps_the_ones_below(base):
    before = hashes(base)
    edit(base, "requirements-ml.txt", "scikit-learn\n")
    after = hashes(base)
    assert changed(before, after) == {"image"}
    assert changed_layers(before.layers, after.layers) == ("kernel:ml", "kernel:stats", "requirements", "runtime")


@pytest.mark.parametrize(
    "rel, content",
    [
        ("users.csv", "name,password,admin (first row is header)\nfoo,NEW\nbar,bar,\nteacher,s3cret,1\nta,pass word,yes\n"),
        ("users.csv", "name,password,admin (first row is header)\nfoo,bar\nbar,bar,1\nteacher,s3cret,1\nta,pass word,yes\n"),
        ("users.csv", "name,password,admin (first row is header)\nfoo,bar\nbar,bar,\nteacher,s3cret,1\nta,pass word,yes\nnew,pw\n"),
    ],
)
def test_users_csv_changes_the_users_hash_only(base, rel, content):
    before = hashes(base)
    edit(base, rel, content)
    after = hashes(base)
    assert changed(before, after) == {"users"}
    assert after.layers == before.layers


def test_users_csv_layout_alone_changes_nothing(base):
    before = hashes(base)
    edit(base, "users.csv", "\ufeffNAME;whatever\r\n\r\nfoo , bar\r\nbar,bar,no\r\n\r\nteacher,s3cret,TRUE\r\nta,\"pass word\",y\r\n")
    assert hashes(base) == before


@pytest.mark.parametrize(
    "rel, content",
    [
        ("shared/week1/notes.md", "# Week 1\nRead chapter 2.\n"),
        ("shared/week2/data.csv", "a,b\n1,2\n"),
        ("shared/week1/notes.md", None),
        ("home_default/.bashrc", "export EDITOR=nano\n"),
        ("home_default/notebooks/start.ipynb", "{}"),
    ],
)
def test_shared_and_home_default_change_the_files_hash_only(base, rel, content):
    before = hashes(base)
    edit(base, rel, content)
    after = hashes(base)
    assert changed(before, after) == {"files"}
    assert after.layers == before.layers


def test_moving_a_file_between_shared_and_home_default_changes_the_files_hash(base):
    before = hashes(base)
    (base / "home_default" / "week1").mkdir()
    (base / "shared" / "week1" / "notes.md").rename(base / "home_default" / "week1" / "notes.md")
    assert changed(before, hashes(base)) == {"files"}


@pytest.mark.parametrize(
    "rel, content",
    [
        ("srv/jupyterhub_config.py", "c.Spawner.default_url = '/tree'\n"),
        ("srv/jupyterhub_config.py", None),
        ("conjuring.toml", '[hub]\nport = 8000\nmem_limit = "1G"\n'),
        ("conjuring.toml", '[hub]\nport = 8989\nmem_limit = "2G"\n'),
        ("conjuring.toml", '[hub]\nport = 8989\nmem_limit = "1G"\nidle_timeout = 600\ncpu_limit = 1\n'),
    ],
)
def test_restart_inputs_change_the_restart_hash_only(base, rel, content):
    before = hashes(base)
    edit(base, rel, content)
    after = hashes(base)
    assert changed(before, after) == {"restart"}
    assert after.layers == before.layers


@pytest.mark.parametrize(
    "extra",
    [
        "keep_images = 5\n",
        "health_timeout = 60\n",
        "prewarm = true\n",
        "bootstrap_base = false\n",
        '[network]\nserve = "Classroom"\n',
        '[network.hotspot]\nssid = "Room 101"\npassphrase = "correct horse"\nchannel = 6\n',
    ],
)
def test_settings_outside_the_hub_change_none_of_these_hashes(base, extra):
    """keep_images & co. are daemon-side; the network is compared by the network adapter itself."""
    before = hashes(base)
    (base / "conjuring.toml").write_text('[hub]\nport = 8989\nmem_limit = "1G"\n' + extra)  # [hub] keys land in [hub]
    assert hashes(base) == before


def test_hashes_ignore_mtimes(base):
    before = hashes(base)
    for path in base.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    assert hashes(base) == before


def test_hashes_ignore_creation_and_listing_order(tmp_path, base):
    files = sorted((p.relative_to(base), p.read_bytes()) for p in base.rglob("*") if p.is_file())
    twin = tmp_path / "twin"
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    for rel, content in shuffled:
        edit(twin, str(rel), content)
    assert hashes(twin) == hashes(base)


def test_tree_digest_ignores_order_of_entries():
    items = (("a.txt", "1" * 64), ("b/c.txt", "2" * 64), ("z", "3" * 64))
    assert tree_digest(FileTree(items)) == tree_digest(FileTree(tuple(reversed(items))))
    assert tree_digest(FileTree(items)) != tree_digest(FileTree(items[:2]))
    renamed = (("a.txt", "1" * 64), ("b/c.txt", "2" * 64), ("y", "3" * 64))
    assert tree_digest(FileTree(items)) != tree_digest(FileTree(renamed))


def test_apt_order_does_not_rebuild(base):
    before = hashes(base)
    edit(base, "apt.txt", "# reordered\nnano\nvim   git\n")
    assert hashes(base) == before


def test_hashes_are_stable_across_loads(base):
    assert hashes(base) == hashes(base)
    assert all(len(value) == 64 for value in (hashes(base).image, hashes(base).restart, hashes(base).users, hashes(base).files))


def test_layer_order_is_the_renderers_order(base):
    """changed_layers() names what a build really redoes only if both orders agree."""
    from conjuringd.hub.dockerfile import render

    config, _ = load_custom(base)
    rendered = render(config, "h")
    assert [name for name, _ in rendered.sections] == [name for name, _ in config_hashes(config, "").layers]


def test_stream_digest_is_the_same_value_as_digest(tmp_path):
    from conjuringd.hashing import StreamDigest, digest
    (tmp_path / "f").write_bytes(b"x" * 3_000_001)
    d = StreamDigest()
    d.part("users.csv")
    d.file(tmp_path / "f")
    assert d.hexdigest() == digest("users.csv", b"x" * 3_000_001)  # snapshots hashed before keep their names


def test_config_digest_and_mirror_tree_stream_big_files(tmp_path):
    """A 64 MiB file is hashed and mirrored with a few MiB of memory, not 64."""
    import tracemalloc
    from conjuringd.adapters.hub_files import mirror_tree
    from conjuringd.store import config_digest
    folder = tmp_path / "custom" / "shared"
    folder.mkdir(parents=True)
    with open(folder / "big.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(2**20))
    tracemalloc.start()
    try:
        config_digest(tmp_path / "custom")
        _, peak_digest = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert mirror_tree(folder, tmp_path / "mirror") == 1
        _, peak_mirror = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_digest < 8 * 2**20 and peak_mirror < 8 * 2**20, (peak_digest, peak_mirror)
    assert (tmp_path / "mirror/big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    assert mirror_tree(folder, tmp_path / "mirror") == 0
