"""The Dockerfile renderer: layer order, determinism, no secrets, cache-friendly changes."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from conjuringd.config.load import load_custom
from conjuringd.config.model import HubSettings
from conjuringd.config.problems import has_errors
from conjuringd.hashing import changed_layers, config_hashes, image_layers
from conjuringd.hub.dockerfile import DEFAULT_BASE, base_extra_lines, base_image, deterministic_tar, render
from tests.support.hubconfig import make_config, replace

REPO = Path(__file__).resolve().parents[2]


def cfg(tmp_path: Path, **kw):
    return make_config(tmp_path, users=(("alice", "s3cret-alice", False), ("bob", "s3cret-bob", True)), certs=False, **kw)


def test_sections_follow_image_layers(tmp_path):
    config = cfg(tmp_path, kernels=(("stats", "venv", b"numpy\n"),))
    rendered = render(config, "h")
    names = [name for name, _ in rendered.sections]
    assert names == [name for name, _ in image_layers(config)]
    assert names[:3] == ["base", "certs", "core"]  # the core's pip install needs the proxy CA


def test_context_is_deterministic_and_normalised(tmp_path):
    a = render(cfg(tmp_path, requirements=b"six\n"), "h").context_tar()
    b = render(cfg(tmp_path, requirements=b"six\n"), "h").context_tar()
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        assert "Dockerfile" in tar.getnames() and "runtime/provision.py" in tar.getnames()


def test_no_password_or_users_in_the_context(tmp_path):
    blob = render(cfg(tmp_path, requirements=b"six\n"), "h").context_tar()
    assert b"s3cret-alice" not in blob and b"s3cret-bob" not in blob
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert not [n for n in tar.getnames() if "users" in n or "secret" in n]


def test_requirements_change_leaves_every_earlier_step_unchanged(tmp_path):
    old = render(cfg(tmp_path, apt=("cowsay",), requirements=b"six\n"), "h1")
    new = render(cfg(tmp_path, apt=("cowsay",), requirements=b"six\nattrs\n"), "h2")
    cut = old.dockerfile.index("# --- layer: requirements")
    assert new.dockerfile[:cut] == old.dockerfile[:cut]
    assert new.dockerfile != old.dockerfile
    old_files = {p: d for p, d, _ in old.files}
    new_files = {p: d for p, d, _ in new.files}
    assert [p for p in new_files if new_files[p] != old_files.get(p)] == ["requirements.txt"]


def test_requirements_change_changes_only_requirements_and_runtime_hashes(tmp_path):
    old = config_hashes(cfg(tmp_path, requirements=b"six\n"), "a")
    new = config_hashes(cfg(tmp_path, requirements=b"attrs\n"), "b")
    assert changed_layers(old.layers, new.layers) == ("requirements", "runtime")
    assert old.users == new.users and old.image != new.image


def test_users_change_changes_no_image_layer(tmp_path):
    a = cfg(tmp_path)
    b = replace(a, users=a.users[:1])
    assert config_hashes(a, "a").image == config_hashes(b, "b").image
    assert config_hashes(a, "a").users != config_hashes(b, "b").users


def test_apt_packages_are_sorted_in_one_step(tmp_path):
    text = render(cfg(tmp_path, apt=("zsh", "cowsay")), "h").dockerfile
    assert "--no-install-recommends cowsay zsh &&" in text
    assert "apt-get install" not in render(cfg(tmp_path), "h").dockerfile.split("# --- layer: apt")[1]


def test_conda_paths_render_micromamba_and_named_kernels(tmp_path):
    config = cfg(tmp_path, environment=b"dependencies: [numpy]\n", kernels=(("r", "conda", b"dependencies: [r-base]\n"),))
    rendered = render(config, "h")
    text = rendered.dockerfile
    assert "bin/micromamba" in text and "ENV MAMBA_ROOT_PREFIX=" in text
    assert "micromamba create -y -p /opt/conjuring/conda/python3" in text
    assert "--prefix /opt/conjuring/venv --name python3" in text  # replaces the default kernel
    assert "micromamba create -y -p /opt/conjuring/conda/r -f /opt/conjuring/conda/r.yml" in text
    assert "--name r --display-name \"Python (r)\"" in text
    assert {p for p, _, _ in rendered.files} >= {"kernels/environment-python3.yml", "kernels/environment-r.yml"}
    other = config_hashes(replace(config, kernels=(config.kernels[0].__class__("r", "conda", "environment-r.yml", b"x"),)), "b")
    assert changed_layers(config_hashes(config, "a").layers, other.layers) == ("kernel:r", "requirements", "runtime")


def test_venv_kernel_gets_its_own_venv_and_kernelspec(tmp_path):
    text = render(cfg(tmp_path, kernels=(("stats", "venv", b"numpy\n"),)), "h").dockerfile
    assert "/usr/bin/python3 -m venv /opt/conjuring/kernels/stats" in text
    assert "ipykernel install --prefix /usr/local --name stats" in text


def test_base_image_choice(tmp_path):
    assert base_image(cfg(tmp_path)) == DEFAULT_BASE
    assert base_image(cfg(tmp_path, base_image="ubuntu:24.04")) == "ubuntu:24.04"
    assert base_image(cfg(tmp_path, base_image="ubuntu:24.04", hub=HubSettings(base_image="debian:trixie"))) == "debian:trixie"
    text = render(cfg(tmp_path, base_image="ubuntu:24.04"), "h", base="local/x:1").dockerfile
    assert text.startswith("# --- layer: base\nFROM local/x:1\n")


def test_base_dockerfile_extra_instructions_are_kept():
    src = b"# comment\nFROM debian:bookworm AS base\nRUN echo one \\\n  two\n\nENV A=1\n"
    assert base_extra_lines(src) == ["RUN echo one \\", "  two", "ENV A=1"]
    assert base_extra_lines(b"FROM x\n") == []


def test_certs_are_copied_and_trusted(tmp_path):
    config = replace(cfg(tmp_path), certs=(("school.crt", b"-----BEGIN CERTIFICATE-----\n"),))
    rendered = render(config, "h")
    assert ("certs/school.crt", b"-----BEGIN CERTIFICATE-----\n", 0o644) in rendered.files
    assert "update-ca-certificates" in rendered.dockerfile and "PIP_CERT=" in rendered.dockerfile


def test_step_layer_maps_steps_to_sections(tmp_path):
    rendered = render(cfg(tmp_path, apt=("cowsay",), requirements=b"six\n"), "h")
    steps = [line for line in rendered.dockerfile.splitlines() if not line.startswith("#")]
    for number, line in enumerate(steps, start=1):
        if line.startswith("RUN apt-get update && apt-get install -y --no-install-recommends cowsay"):
            assert rendered.step_layer(number) == "apt"
        if line.startswith("COPY requirements.txt"):
            assert rendered.step_layer(number) == "requirements"
    assert rendered.step_layer(1) == "base"
    assert rendered.step_layer(len(steps)) == "runtime"


def test_deterministic_tar_modes():
    blob = deterministic_tar((("b.sh", b"x", 0o755), ("a", b"y", 0o644)))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert [(m.name, m.mode) for m in tar.getmembers()] == [("a", 0o644), ("b.sh", 0o755)]


def _ca_certificate() -> bytes:
    """One real CA certificate of this machine (the validator checks it is one)."""
    return sorted(Path("/etc/ssl/certs").glob("*.pem"))[0].read_bytes()


def test_a_certificate_with_a_120_character_name_validates_and_goes_into_the_context(tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(REPO / "custom", folder)
    long_name = "school-" + "x" * 109 + ".crt"
    assert len(long_name) == 120
    (folder / "certs").mkdir(exist_ok=True)
    (folder / "certs" / long_name).write_bytes(_ca_certificate())
    config, problems = load_custom(folder)
    assert config is not None and not has_errors(problems), problems
    assert long_name in [name for name, _ in config.certs]
    blob = render(config, "h").context_tar()  # ustar raised ValueError here (name over 100 characters)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.getmember(f"certs/{long_name}")
        assert tar.extractfile(member).read() == _ca_certificate()
    assert blob == render(config, "h").context_tar(), "still deterministic"


def test_short_names_are_written_exactly_as_before(tmp_path):
    files = (("certs/host-ca.crt", b"pem", 0o644), ("runtime/a.py", b"x", 0o755))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # the format used until now
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), mode, 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data))
    assert deterministic_tar(files) == buf.getvalue()
