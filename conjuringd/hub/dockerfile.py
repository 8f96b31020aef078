"""Render the hub's Dockerfile and a deterministic build context from a configuration.

Layers follow `conjuringd.hashing.image_layers` from rarely to often changed.
The CA certificates come right after FROM, before the core, because the core's
pip install already goes through a school's TLS proxy.
Nothing secret goes into the context: users and passwords arrive at run time.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from conjuringd.config.bases import python_check_step
from conjuringd.config.model import CustomConfig
from conjuringd.hub import coresets
from conjuringd.hub.extensions import server_extensions

DEFAULT_BASE = "debian:bookworm"
VENV = "/opt/conjuring/venv"
RUNTIME_DIR = "/opt/conjuring/runtime"
KERNELS_DIR = "/opt/conjuring/kernels"
CONDA_DIR = "/opt/conjuring/conda"
IMAGE_LABEL = "org.conjuring.image"
RUNTIME_SRC = Path(__file__).parent / "runtime"

CORE_PACKAGES = coresets.CURRENT.packages  # the default base's core (conjuringd.hub.coresets)
# rfc3987-syntax (pulled in by jupyter-events' jsonschema[format-nongpl]) builds a Lark grammar at import:
# about 2 of the 3 CPU-seconds of every single-user server start. Nothing needs it (jsonschema skips the
# iri formats without it).
CORE_UNUSED = ("rfc3987-syntax", "lark")
# micromamba, pinned: a release binary of github.com/mamba-org/micromamba-releases and its published sha256
# (linux-64, the only architecture pinned: elsewhere the step stops with a message)
MICROMAMBA_VERSION = "2.1.0-0"
MICROMAMBA_SHA256 = "15d4127a9b248907ab99e2804bd86789f1bbd1458d206065c16a9e86c02d6a30"
MICROMAMBA_URL = (f"https://github.com/mamba-org/micromamba-releases/releases/download/{MICROMAMBA_VERSION}/"
                  "micromamba-linux-64")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_CA_ENV = (
    f"PIP_CERT={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} "
    f"NODE_EXTRA_CA_CERTS={CA_BUNDLE} npm_config_cafile={CA_BUNDLE} CURL_CA_BUNDLE={CA_BUNDLE}"
)
_APT_CLEAN = "rm -rf /var/lib/apt/lists/*"
_APT_INSTALL = "apt-get update && apt-get install -y --no-install-recommends"
MICROMAMBA_STEP = (
    "RUN { [ \"$(uname -m)\" = x86_64 ] || { echo 'conda environments need an x86_64 box: micromamba is pinned "
    "for linux-64 only' >&2; exit 1; }; } "
    f"&& {_APT_INSTALL} curl && {_APT_CLEAN} && curl -fsSL -o /usr/local/bin/micromamba {MICROMAMBA_URL} "
    f"&& echo '{MICROMAMBA_SHA256}  /usr/local/bin/micromamba' | sha256sum -c - && chmod 755 /usr/local/bin/micromamba"
)


@dataclass(frozen=True)
class Rendered:
    dockerfile: str
    files: tuple[tuple[str, bytes, int], ...]  # (path in context, content, mode)
    sections: tuple[tuple[str, int], ...]  # (layer name, index of its first Dockerfile step)

    def step_layer(self, step: int) -> str:
        """Name of the layer a 1-based build step belongs to."""
        name = self.sections[0][0]
        for layer, first in self.sections:
            if step >= first:
                name = layer
        return name

    def context_tar(self) -> bytes:
        return deterministic_tar((("Dockerfile", self.dockerfile.encode(), 0o644),) + self.files)


def deterministic_tar(files: tuple[tuple[str, bytes, int], ...]) -> bytes:
    """A tar whose bytes depend only on names, contents and modes.

    POSIX.1-2001 (pax) format: a name over ustar's 100 (+155) characters, such as a long
    certificate file name, gets a pax header instead of a ValueError; short names are
    written exactly as ustar writes them.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def base_image(config: CustomConfig) -> str:
    """The image named by settings, else base.Dockerfile's FROM, else the default."""
    return config.settings.hub.base_image or config.base_image or DEFAULT_BASE


def base_extra_lines(base_dockerfile: bytes) -> list[str]:
    """base.Dockerfile's instructions after its FROM (comments dropped, continuations kept)."""
    lines, seen_from = [], False
    for line in base_dockerfile.decode("utf-8", "replace").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not seen_from and re.match(r"(?i)^from\s", stripped):
            seen_from = True
            continue
        if seen_from:
            lines.append(line.rstrip())
    return lines


def runtime_files() -> tuple[tuple[str, bytes, int], ...]:
    out = []
    for path in sorted(RUNTIME_SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            mode = 0o755 if path.suffix in (".sh", ".py") else 0o644
            out.append((f"runtime/{path.relative_to(RUNTIME_SRC).as_posix()}", path.read_bytes(), mode))
    return tuple(out)


class Builder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.files: list[tuple[str, bytes, int]] = []
        self.sections: list[tuple[str, int]] = []
        self.steps = 0

    def section(self, name: str) -> None:
        self.lines.append(f"# --- layer: {name}")
        self.sections.append((name, self.steps + 1))

    def step(self, instruction: str) -> None:
        self.lines.append(instruction)
        self.steps += 1

    def add(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files.append((path, data, mode))

    def rendered(self) -> Rendered:
        return Rendered("\n".join(self.lines) + "\n", tuple(self.files), tuple(self.sections))


def _kernel_lines(b: Builder, name: str, kind: str, content: bytes) -> None:
    # the default kernel (environment.yml) replaces the core venv's "python3" spec
    spec_prefix = VENV if name == "python3" else "/usr/local"
    if kind == "venv":
        prefix = f"{KERNELS_DIR}/{name}"
        b.add(f"kernels/requirements-{name}.txt", content)
        b.step(f"COPY kernels/requirements-{name}.txt {prefix}.requirements.txt")
        b.step(
            f"RUN /usr/bin/python3 -m venv {prefix} && {prefix}/bin/pip install --no-cache-dir ipykernel "
            f"-r {prefix}.requirements.txt && {prefix}/bin/python -m ipykernel install "
            f"--prefix {spec_prefix} --name {name} --display-name {json.dumps('Python (' + name + ')')}"
        )
    else:
        prefix = f"{CONDA_DIR}/{name}"
        b.add(f"kernels/environment-{name}.yml", content)
        b.step(f"COPY kernels/environment-{name}.yml {prefix}.yml")
        b.step(
            f"RUN micromamba create -y -p {prefix} -f {prefix}.yml && micromamba install -y -p {prefix} "
            f"-c conda-forge ipykernel pip && micromamba clean -a -y && {prefix}/bin/python -m ipykernel install "
            f"--prefix {spec_prefix} --name {name} --display-name {json.dumps('Python (' + name + ')')}"
        )


def _requirements_lines(b: Builder, config: CustomConfig) -> None:
    """requirements.txt into the default kernel's environment (the hub's venv, or environment.yml's conda
    environment: the original's one environment held both files); then the known server-side extensions
    of both files into the hub's venv, held to the core's pinned versions (conjuringd.hub.extensions)."""
    conda_default = bool(config.environment.strip())
    if config.requirements.strip():
        python = f"{CONDA_DIR}/python3/bin/python" if conda_default else f"{VENV}/bin/python"
        b.add("requirements.txt", config.requirements)
        b.step("COPY requirements.txt /opt/conjuring/requirements.txt")
        b.step(f"RUN {python} -m pip install --no-cache-dir -r /opt/conjuring/requirements.txt")
    extensions = server_extensions(config.environment, config.requirements) if conda_default else ()
    if extensions:  # without environment.yml requirements.txt went into the hub's venv just above
        b.add("server-extensions.txt", "".join(f"{spec}\n" for spec in extensions).encode())
        b.step("COPY server-extensions.txt /opt/conjuring/")
        # held to the core set the build chose; pip completes the core's dependencies on the way: what
        # CORE_UNUSED took out comes back unless removed
        b.step(f"RUN {VENV}/bin/pip install --no-cache-dir -c {coresets.CHOSEN} "
               f"-r /opt/conjuring/server-extensions.txt && {VENV}/bin/pip uninstall -y {' '.join(CORE_UNUSED)}")


def _core_lines(b: Builder, core: "Core") -> None:
    """The venv with the newest core set the base's python3 can run (conjuringd.hub.coresets); `core` says
    which of its packages (all, or only those named) and whether the set's own Debian packages (the proxy)."""
    for path, data in coresets.files():
        b.add(path, data)
    b.step("COPY core/ /opt/conjuring/core/")
    sets = "/opt/conjuring/core/$core"
    pins = (f"cp {sets}.txt {coresets.CHOSEN}" if not core.only else
            f"grep -E '^({'|'.join(core.only)})==' {sets}.txt > {coresets.CHOSEN}")
    extra = f" $(cat {sets}.apt)" if core.set_apt else ""
    b.step(f"RUN {coresets.choose_command()} && {pins} "
           f"&& {_APT_INSTALL} {' '.join(core.apt)}{extra} && {_APT_CLEAN}")
    pip_first = f"{{ [ ! -s {sets}.pip ] || {VENV}/bin/pip install --no-cache-dir -r {sets}.pip; }}"
    b.step(f"RUN {coresets.choose_command()} && python3 -m venv {VENV} && {pip_first} "
           f"&& {VENV}/bin/pip install --no-cache-dir -r {coresets.CHOSEN} && {VENV}/bin/pip uninstall -y {' '.join(CORE_UNUSED)}")


def _needs_micromamba(config: CustomConfig) -> bool:
    return bool(config.environment.strip()) or any(k.kind == "conda" for k in config.kernels)


@dataclass(frozen=True)
class Core:
    """What the core layer installs: Debian packages, then the chosen core set's pins in the venv."""

    apt: tuple[str, ...] = ("python3", "python3-venv", "procps", "passwd")
    only: tuple[str, ...] = ()  # install only these of the set's packages; () = all of them
    set_apt: bool = True  # also the set's own Debian packages (the proxy)


HUB_CORE = Core()


def image_layers(b: Builder, config: CustomConfig, core: Core, base: str | None = None) -> None:
    """The layers every image of a configuration shares, from base to requirements: the hub's image
    (`render`) and the single-user image of an export (`conjuringd.export.image`)."""
    b.section("base")
    b.step(f"FROM {base or base_image(config)}")
    for line in base_extra_lines(config.base_dockerfile):
        b.step(line)
    b.step("ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8")
    # first of all: a base whose python3 is too old for the core fails here with one line naming it
    b.step(python_check_step(base_image(config)))
    b.section("certs")
    for name, pem in sorted(config.certs):
        b.add(f"certs/{Path(name).name}", pem)
    b.add("certs/.keep", b"")
    b.step("COPY certs/ /usr/local/share/ca-certificates/conjuring/")
    b.step(
        f"RUN {_APT_INSTALL} ca-certificates && rm -f /usr/local/share/ca-certificates/conjuring/.keep "
        f"&& update-ca-certificates && {_APT_CLEAN}"
    )
    b.step(f"ENV {_CA_ENV}")
    b.section("core")
    _core_lines(b, core)
    b.step(f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    b.section("apt")
    if config.apt_packages:
        b.step(f"RUN {_APT_INSTALL} {' '.join(sorted(config.apt_packages))} && {_APT_CLEAN}")
    b.section("environment")
    if _needs_micromamba(config):
        b.step(MICROMAMBA_STEP)
        b.step(f"ENV MAMBA_ROOT_PREFIX={CONDA_DIR}/root")
    if config.environment.strip():
        _kernel_lines(b, "python3", "conda", config.environment)
    for kernel in sorted(config.kernels, key=lambda k: k.name):
        b.section(f"kernel:{kernel.name}")
        _kernel_lines(b, kernel.name, kernel.kind, kernel.content)
    b.section("requirements")
    _requirements_lines(b, config)


def render(config: CustomConfig, image_hash: str, base: str | None = None) -> Rendered:
    """The hub's Dockerfile and context for `config`; `base` overrides the resolved FROM image."""
    b = Builder()
    image_layers(b, config, HUB_CORE, base)
    b.section("runtime")
    for path, data, mode in runtime_files():
        b.add(path, data, mode)
    b.step(f"COPY runtime/ {RUNTIME_DIR}/")
    # the fork server and the spare kernel (with their entry point and server-extension config), importable
    # by the hub and the servers; JupyterLab's cell executor that never loses a notebook's first run
    # (share/jupyter/labextensions/@conjuring/first-run)
    b.step(f"RUN cp -r {RUNTIME_DIR}/site/. \"$({VENV}/bin/python -c 'import site; print(site.getsitepackages()[0])')\"/ "
           f"&& cp -r {RUNTIME_DIR}/etc/. {VENV}/etc/ && cp -r {RUNTIME_DIR}/share/. {VENV}/share/")
    b.step("EXPOSE 8000")
    b.step(f'ENTRYPOINT ["{RUNTIME_DIR}/entrypoint.sh"]')
    b.step(f"LABEL {IMAGE_LABEL}={image_hash}")
    return b.rendered()
