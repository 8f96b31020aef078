"""One default environment: requirements.txt into environment.yml's kernel, listed extensions into the server."""

from __future__ import annotations

import runpy

from conjuringd.hub import dockerfile
from conjuringd.hub.dockerfile import CORE_PACKAGES, MICROMAMBA_SHA256, MICROMAMBA_VERSION, render
from conjuringd.hub.extensions import conda_to_pip, server_extensions
from tests.support.condastandin import COPY_STEP, STANDIN, swap_download
from tests.support.hubconfig import make_config

ENV = b"""channels: [conda-forge]
dependencies:
  - python=3.11
  - conda-forge::ipywidgets=8.1
  - numpy
  - pip:
    - nbgitpuller>=1.2
    - tqdm
"""


def cfg(tmp_path, **kw):
    return make_config(tmp_path, certs=False, **kw)


def files(rendered) -> dict[str, bytes]:
    return {path: data for path, data, _ in rendered.files}


def test_conda_specs_become_pip_requirements():
    assert conda_to_pip("conda-forge::ipywidgets=8.1") == "ipywidgets==8.1.*"
    assert conda_to_pip("ipywidgets==8.1.2") == "ipywidgets==8.1.2"
    assert conda_to_pip("jupytext >=1.16,<2") == "jupytext>=1.16,<2"
    assert conda_to_pip("plotly 5.*") == "plotly==5.*"
    assert conda_to_pip("bqplot=0.12=pyhd8ed1ab_0") == "bqplot==0.12.*"
    assert conda_to_pip("voila[version='>=0.5']") == "voila"


def test_known_extensions_are_found_in_both_files_and_nothing_else():
    found = server_extensions(ENV, b"jupyterlab-git==0.50.1 --hash=sha256:00\nJupyter_Resource_Usage\npandas\n")
    assert found == ("ipywidgets==8.1.*", "Jupyter_Resource_Usage", "jupyterlab-git==0.50.1", "nbgitpuller>=1.2")
    assert server_extensions(b"dependencies: [numpy, python]\n", b"tqdm\n") == ()
    assert server_extensions(b": not yaml [\n", b"") == ()


def test_with_environment_yml_requirements_go_into_its_kernel_and_extensions_into_the_hub(tmp_path):
    rendered = render(cfg(tmp_path, environment=ENV, requirements=b"tomli-w\nnbgitpuller\n"), "h")
    text = rendered.dockerfile
    assert "RUN /opt/conjuring/conda/python3/bin/python -m pip install --no-cache-dir -r /opt/conjuring/requirements.txt" in text
    assert "/opt/conjuring/venv/bin/pip install --no-cache-dir -r /opt/conjuring/requirements.txt" not in text
    assert "-c conda-forge ipykernel pip &&" in text  # the conda kernel always has pip for requirements.txt
    assert files(rendered)["server-extensions.txt"] == b"ipywidgets==8.1.*\nnbgitpuller>=1.2\n"
    assert files(rendered)["core/py3.10.txt"].decode().split() == list(CORE_PACKAGES)  # the build chose one set
    assert ("RUN /opt/conjuring/venv/bin/pip install --no-cache-dir -c /opt/conjuring/core-constraints.txt "
            "-r /opt/conjuring/server-extensions.txt && /opt/conjuring/venv/bin/pip uninstall -y rfc3987-syntax lark") in text
    assert text.index("server-extensions.txt") > text.index("# --- layer: requirements")


def test_without_environment_yml_everything_stays_in_the_hub_venv(tmp_path):
    rendered = render(cfg(tmp_path, requirements=b"nbgitpuller\n"), "h")
    assert "RUN /opt/conjuring/venv/bin/python -m pip install --no-cache-dir -r /opt/conjuring/requirements.txt" in rendered.dockerfile
    assert "server-extensions.txt" not in files(rendered) and "micromamba" not in rendered.dockerfile


def test_micromamba_is_pinned_and_checked_where_it_is_downloaded(tmp_path):
    text = render(cfg(tmp_path, environment=ENV), "h").dockerfile
    assert text.count(dockerfile.MICROMAMBA_STEP) == 1 and "latest" not in text
    assert f"/releases/download/{MICROMAMBA_VERSION}/micromamba-linux-64" in dockerfile.MICROMAMBA_STEP
    assert f"echo '{MICROMAMBA_SHA256}  /usr/local/bin/micromamba' | sha256sum -c -" in dockerfile.MICROMAMBA_STEP
    assert len(MICROMAMBA_SHA256) == 64 and int(MICROMAMBA_SHA256, 16) >= 0
    # the checksum is checked before the binary is made executable, and a mismatch stops the step
    step = dockerfile.MICROMAMBA_STEP
    assert step.index("sha256sum -c -") < step.index("chmod 755") and "sha256sum -c - &&" in step


def test_the_stand_in_swap_replaces_only_the_download(tmp_path):
    rendered = render(cfg(tmp_path, environment=ENV, kernels=(("extra", "conda", b"dependencies: [six]\n"),)), "h")
    swapped = swap_download(rendered)
    old, new = rendered.dockerfile.splitlines(), swapped.dockerfile.splitlines()
    assert [(a, b) for a, b in zip(old, new) if a != b] == [(dockerfile.MICROMAMBA_STEP, COPY_STEP)]
    assert swapped.sections == rendered.sections and ("standin/micromamba", STANDIN.read_bytes(), 0o755) in swapped.files


def test_the_stand_in_reads_conda_specs_as_pypi_names():
    standin = runpy.run_path(str(STANDIN))
    assert standin["pip_name"]("conda-forge::tabulate=0.9") == "tabulate==0.9.*"
    assert standin["pip_name"]("six") == "six"
    assert standin["positional"](["-y", "-p", "/x", "-c", "conda-forge", "ipykernel", "pip"]) == ["ipykernel", "pip"]
