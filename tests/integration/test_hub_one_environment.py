"""environment.yml and requirements.txt make one default environment, as in the original Conjuring (real hub).

The original installed both files into conda's base environment, where its server and default kernel ran.
Here a non-empty environment.yml makes the default kernel a conda environment of its own; this builds a real
hub image and container from a teacher's environment.yml, environment-tools.yml (`name: extra`) and requirements.txt and
looks, as a student, at what the original gave: one notebook importing from both files, the kernels and
their names, widgets and nbgitpuller reaching the server, and the hub's own pins not moved.

STAND-IN: conda channels and micromamba's download are not reachable from the test machine. The image is
built with tests/support/standin/micromamba (a clearly named venv + pip script, see tests/support/
condastandin.py) in place of the pinned download; every other step is the product's. Not covered here:
real conda solving, channels, conda-only packages (r-base...), and the pinned binary's download and
checksum (tests/unit/test_hub_extensions.py checks the rendered step).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import pytest

from conjuringd.adapters import docker as docker_adapter
from conjuringd.config.load import load_custom
from tests.support.condastandin import standin_render
from tests.support.docker import DOCKER, require_docker
from tests.support.hubconfig import replace
from tests.support.hubworld import World, container_logs, login, remove_hub_containers
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-envtest", 18977  # its own container: no lock needed against the other hub tests
CONDA = "/opt/conjuring/conda"
ENVIRONMENT = b"""#name: a-course
channels:
  - conda-forge
dependencies:
  - python
  - pip
  - tabulate
  - ipywidgets
  - pip:
    - nbgitpuller
"""
# the original named a conda environment (and so its kernel) by the file's `name:`, not by the file name:
# notebooks made there record "extra", never "tools"
EXTRA_FILE = "environment-tools.yml"
EXTRA = b"name: extra\nchannels: [conda-forge]\ndependencies:\n  - toolz\n"
REQUIREMENTS = b"# from requirements.txt only\ntomli-w\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    w = World(tmp_path_factory.mktemp("oneenv"), name=NAME, port=PORT)
    w.config = replace(w.config, environment=ENVIRONMENT, requirements=REQUIREMENTS,
                       kernels=named_kernels(tmp_path_factory.mktemp("teacher")))
    patch = pytest.MonkeyPatch()
    patch.setattr(docker_adapter, "render", standin_render)
    try:
        asyncio.run(w.converge())
        w.alice = login("alice", "alice-pw-1", w.base)
        assert w.alice.wait_lab("alice", 240) == 200, container_logs(60, NAME)
        yield w
    finally:
        patch.undo()
        asyncio.run(w.hub.close())
        remove_hub_containers(NAME)


def named_kernels(folder):
    """The extra kernels as conjuringd's loader names them from the teacher's files (not written by hand)."""
    (folder / "users.csv").write_text("name,password,admin\nalice,alice-pw-1,\n")
    (folder / EXTRA_FILE).write_bytes(EXTRA)
    config, problems = load_custom(folder)
    assert config is not None, problems
    assert [(k.name, k.file) for k in config.kernels] == [("extra", EXTRA_FILE)]
    return config.kernels


def sh(*args: str) -> str:
    run = subprocess.run([DOCKER, "exec", NAME, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def notebook_kernel(world, path: str, kernel: str = "python3") -> str:
    """A notebook saved in alice's home and opened with `kernel`, as JupyterLab opens one; its kernel id."""
    base = "/user/alice/api"
    notebook = {"cells": [], "metadata": {"kernelspec": {"name": kernel, "display_name": kernel}},
                "nbformat": 4, "nbformat_minor": 5}
    status, _, body = world.alice.request("PUT", f"{base}/contents/{path}",
                                          {"type": "notebook", "format": "json", "content": notebook})
    assert status in (200, 201), body[:300]
    status, _, body = world.alice.request("POST", f"{base}/sessions",
                                          {"path": path, "type": "notebook", "name": path, "kernel": {"name": kernel}})
    assert status == 201, body[:300]
    return json.loads(body)["kernel"]["id"]


def test_the_default_kernel_imports_from_environment_yml_and_requirements_txt_in_one_notebook(world):
    kernel = notebook_kernel(world, "both.ipynb")
    code = ("import sys, tabulate, tomli_w, ipywidgets\n"
            "print(sys.prefix); print(tabulate.__name__, tomli_w.__name__, ipywidgets.__version__.split('.')[0])")
    prefix, modules = execute(world.alice, "alice", kernel, code, timeout=120).split("\n")[:2]
    assert prefix == f"{CONDA}/python3"  # the default kernel is environment.yml's environment ...
    assert modules.startswith("tabulate tomli_w ")  # ... and has requirements.txt in it too
    with pytest.raises(RuntimeError, match="ModuleNotFoundError"):  # the extra kernel's package is not in it
        execute(world.alice, "alice", kernel, "import toolz", timeout=60)


def test_kernels_are_registered_under_their_names(world):
    status, _, body = world.alice.request("GET", "/user/alice/api/kernelspecs")
    assert status == 200
    specs = json.loads(body)
    assert specs["default"] == "python3" and set(specs["kernelspecs"]) == {"python3", "extra"}
    argv = {name: spec["spec"]["argv"][0] for name, spec in specs["kernelspecs"].items()}
    assert argv == {"python3": f"{CONDA}/python3/bin/python", "extra": f"{CONDA}/extra/bin/python"}
    kernel = notebook_kernel(world, "extra.ipynb", "extra")
    out = execute(world.alice, "alice", kernel, "import sys, toolz; print(sys.prefix)", timeout=120)
    assert out.strip() == f"{CONDA}/extra"


def test_a_conda_kernel_starts_the_usual_way_not_from_the_fork_server(world):
    kernel = notebook_kernel(world, "parent.ipynb")
    parent = int(execute(world.alice, "alice", kernel, "import os; print(os.getppid())", timeout=60))
    parent_args = sh("ps", "-o", "args=", "-p", str(parent)).strip()
    assert "jupyterhub-singleuser" in parent_args, parent_args  # a child of alice's server, not of the fork server
    exe = execute(world.alice, "alice", kernel, "import sys; print(sys.executable)", timeout=60)
    assert exe.strip() == f"{CONDA}/python3/bin/python"  # not the hub venv's Python: forkable_kernel() says no
    assert "not this Python's ipykernel" not in container_logs(3000, NAME)  # and it was not even asked


def test_extensions_listed_for_the_kernel_reach_the_server_without_moving_its_pins(world):
    _, _, page = world.alice.request("GET", "/user/alice/lab")
    config = json.loads(re.search(rb'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
    federated = {ext["name"] for ext in config.get("federated_extensions", [])}
    assert "@jupyter-widgets/jupyterlab-manager" in federated, sorted(federated)  # ipywidgets' lab half
    assert config["appVersion"] == "4.6.6"  # the extensions were held to the hub's pinned JupyterLab
    status, _, _ = world.alice.request("GET", "/user/alice/git-pull")
    assert status != 404  # nbgitpuller's handler is served (without ?repo= it refuses the request)
    installed = sh("/opt/conjuring/venv/bin/pip", "list", "--format=freeze")
    assert "nbgitpuller==" in installed and "ipywidgets==" in installed
    assert "tabulate==" not in installed and "tomli_w==" not in installed.replace("-", "_")  # kernel-only stays there


def test_the_image_was_built_with_the_stand_in_not_a_real_micromamba(world):
    assert "micromamba STAND-IN" in sh("micromamba", "--version")  # what this test did not cover: see above


CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
WIDGET_CELL = "import tabulate, tomli_w, ipywidgets\nprint(tabulate.__name__, tomli_w.__name__)\nipywidgets.IntSlider(value=7)"
# what the original's notebooks recorded: the environment's name, and ipykernel's display name for every kernel
ORIGINAL_SPEC = {"name": "extra", "display_name": "Python 3 (ipykernel)", "language": "python"}
IDLE = re.compile(r"\|\s*Idle")


def save_notebook(session, user: str, path: str, kernelspec: dict, source: str) -> None:
    """A one-cell notebook with `kernelspec` in its metadata, saved in `user`'s home."""
    notebook = {"cells": [{"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
                           "execution_count": None}],
                "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5}
    status, _, body = session.request("PUT", f"/user/{user}/api/contents/{path}",
                                      {"type": "notebook", "format": "json", "content": notebook})
    assert status in (200, 201), body[:300]


def session_kernel(session, user: str, path: str) -> str:
    """The kernel name of the session JupyterLab opened for `path`."""
    status, _, body = session.request("GET", f"/user/{user}/api/sessions")
    assert status == 200, body[:300]
    names = [s["kernel"]["name"] for s in json.loads(body) if s["path"] == path and s.get("kernel")]
    assert len(names) == 1, body[:600]
    return names[0]


def open_in_lab(browser, base: str, user: str, password: str, path: str):
    """Log in through the form and open `path` in JupyterLab; the page once its kernel is idle."""
    page = goto_lab(browser, base, user, password, path)
    page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for()
    page.locator(".jp-StatusBar-Widget", has_text=IDLE).first.wait_for()
    return page


def goto_lab(browser, base: str, user: str, password: str, path: str):
    """Log in through the form, then go to `path` in JupyterLab."""
    page = browser.new_context().new_page()
    page.set_default_timeout(240_000)
    page.goto(f"{base}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(f"/user/{user}/lab"))
    page.goto(f"{base}/user/{user}/lab/tree/{path}")
    return page


def run_first_cell(page):
    """Shift+Enter in the first cell, as a student does; the cell's locator once it shows output."""
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    cell.locator(".jp-OutputArea-output").first.wait_for()
    return cell


def kernel_shown(page) -> str:
    """The kernel name on the notebook's toolbar (JupyterLab's kernel name button)."""
    return page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").first.inner_text().strip()


def test_in_the_browser_one_notebook_imports_both_files_and_shows_a_widget(world):
    """bob opens a saved notebook (kernel python3 in its metadata) and runs its one cell with Shift+Enter."""
    from playwright.sync_api import sync_playwright

    bob = login("bob", "bob-pw-1", world.base)
    assert bob.wait_lab("bob", 240) == 200
    save_notebook(bob, "bob", "widget.ipynb", {"name": "python3", "display_name": "Python 3", "language": "python"},
                  WIDGET_CELL)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = open_in_lab(browser, world.base, "bob", "bob-pw-1", "widget.ipynb")
            cell = run_first_cell(page)
            text = cell.locator(".jp-OutputArea").inner_text()
            assert "tabulate tomli_w" in text, text  # both files' packages, one cell, the default kernel
            # ipywidgets' lab half is in the server: the slider is drawn, not its text fallback
            cell.locator(".widget-slider").first.wait_for(timeout=60_000)
            assert "IntSlider(value=7)" not in cell.locator(".jp-OutputArea").inner_text()
            assert kernel_shown(page) == "Python (python3)"
        finally:
            browser.close()
    assert session_kernel(bob, "bob", "widget.ipynb") == "python3"


def test_in_the_browser_a_notebook_naming_the_extra_kernel_by_its_name_opens_with_it(world):
    """A notebook from the original's box records the environment's `name:` ("extra", from
    environment-tools.yml): JupyterLab opens it with that kernel, no kernel picker, and its cell runs there."""
    from playwright.sync_api import sync_playwright

    save_notebook(world.alice, "alice", "from-the-original.ipynb", ORIGINAL_SPEC,
                  "import sys, toolz\nprint(sys.prefix)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = open_in_lab(browser, world.base, "alice", "alice-pw-1", "from-the-original.ipynb")
            assert kernel_shown(page) == "Python (extra)"
            assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").first.inner_text()
            assert page.locator(".jp-StatusBar-Widget", has_text="No Kernel").count() == 0
            cell = run_first_cell(page)
            assert cell.locator(".jp-OutputArea").inner_text().strip() == f"{CONDA}/extra"
        finally:
            browser.close()
    assert session_kernel(world.alice, "alice", "from-the-original.ipynb") == "extra"


def test_in_the_browser_a_notebook_naming_the_file_not_the_name_gets_the_kernel_picker(world):
    """The contrast that shows the test above could fail: "tools" (the file's name) is no kernel here, and
    JupyterLab asks which kernel to use instead of starting one."""
    from playwright.sync_api import sync_playwright

    save_notebook(world.alice, "alice", "by-file-name.ipynb", {**ORIGINAL_SPEC, "name": "tools"}, "print(1)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = goto_lab(browser, world.base, "alice", "alice-pw-1", "by-file-name.ipynb")
            dialog = page.locator(".jp-Dialog")
            dialog.first.wait_for(timeout=120_000)
            assert "kernel" in dialog.first.inner_text().lower()
        finally:
            browser.close()
