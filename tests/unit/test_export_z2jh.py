"""conjuringctl export z2jh without docker: the values validate against the chart's own schema (merged onto
the chart's defaults, as helm does before it validates), the passwords stay in the Secret, invalid folders
and used output folders are refused."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from conjuringd.ctl import main
from conjuringd.export.values import memory_limit
from conjuringd.hub.dockerfile import render
from conjuringd.passwords import GeneratedPasswords
from tests.support.docker import in_ci

CHART = Path("z2jh")


def chart_file(name: str) -> Path:
    """The chart's reference copy: ../shared/z2jh/ beside the checkout (CI), or /work/shared/z2jh/."""
    here = Path(__file__).resolve().parents[2]
    for shared in (here.parent / "shared", here.parent.parent / "shared", Path("/work/shared")):
        if (shared / CHART / name).is_file():
            return shared / CHART / name
    if in_ci():
        pytest.fail(f"the chart's {name} is missing beside the checkout (../shared/z2jh/)")
    pytest.skip(f"the chart's {name} is not here")


def helm_merge(defaults: dict, override: dict) -> dict:
    """Helm's coalescing of user values onto a chart's: maps merge, a null deletes the default."""
    out = dict(defaults)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = value
    return out


def folder(tmp_path: Path, users: str, toml: str = "") -> Path:
    custom = tmp_path / "custom"
    (custom / "shared").mkdir(parents=True)
    (custom / "home_default").mkdir()
    (custom / "shared" / "a.txt").write_text("a\n")
    (custom / "home_default" / "start.ipynb").write_text("{}\n")
    (custom / "users.csv").write_text("username,password,admin\n" + users)
    (custom / "conjuring.toml").write_text(toml)
    return custom


def export(tmp_path: Path, custom: Path, *extra: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(["--state-dir", str(tmp_path / "state"), "export", "z2jh", str(custom), str(tmp_path / "out"), *extra])
    return done.value.code


USERS = "alice,alice-pw-1,no\nbob,(generated),no\ncarol,(generated),no\nteacher,teacher-pw-1,yes\n"


def test_values_validate_against_the_charts_schema_and_carry_the_settings(tmp_path):
    custom = folder(tmp_path, USERS, '[hub]\nmem_limit = "2g"\ncpu_limit = 0.5\nidle_timeout = 900\n')
    assert export(tmp_path, custom, "--image", "registry.example/course") == 0
    out = tmp_path / "out"
    values = yaml.safe_load((out / "values.yaml").read_text())
    schema = yaml.safe_load(chart_file("values.schema.yaml").read_text())
    merged = helm_merge(yaml.safe_load(chart_file("values.yaml").read_text()), values)
    jsonschema.validate(merged, schema)
    single = values["singleuser"]
    assert single["image"]["name"] == "registry.example/course" and len(single["image"]["tag"]) == 12
    assert single["memory"] == {"limit": "2G", "guarantee": None} and single["cpu"] == {"limit": 0.5}
    assert "guarantee" not in merged["singleuser"]["memory"]  # the chart's 1G request is gone
    assert values["cull"] == {"enabled": True, "users": False, "adminUsers": True, "timeout": 900, "every": 450}
    assert single["storage"]["type"] == "dynamic" and values["prePuller"]["hook"]["enabled"]
    assert values["hub"]["config"]["Authenticator"] == {"allowed_users": ["alice", "bob", "carol", "teacher"],
                                                        "admin_users": ["teacher"]}


def test_passwords_are_only_in_the_secret_and_generated_ones_are_the_boxs_where_it_has_them(tmp_path):
    GeneratedPasswords(tmp_path / "state" / "secrets").ensure(["bob"])
    box_bob = GeneratedPasswords(tmp_path / "state" / "secrets").read()["bob"]
    assert export(tmp_path, folder(tmp_path, USERS)) == 0
    out = tmp_path / "out"
    secret = yaml.safe_load((out / "users-secret.yaml").read_text())
    passwords = json.loads(secret["stringData"]["users.json"])
    assert passwords["alice"] == "alice-pw-1" and passwords["bob"] == box_bob and passwords["carol"]
    listed = dict(line.split("\t") for line in (out / "generated-passwords.txt").read_text().splitlines())
    assert listed == {"bob": box_bob, "carol": passwords["carol"]}
    assert GeneratedPasswords(tmp_path / "state" / "secrets").read() == {"bob": box_bob}  # carol's is not saved
    text = (out / "values.yaml").read_text() + (out / "README.md").read_text()
    assert not any(p in text for p in passwords.values())
    assert (out / "users-secret.yaml").stat().st_mode & 0o077 == 0
    assert (out / "generated-passwords.txt").stat().st_mode & 0o077 == 0


def test_the_image_shares_the_hub_images_layers_up_to_requirements_without_the_hubs_parts(tmp_path):
    from conjuringd.config.load import load_custom
    from conjuringd.export.image import render_singleuser

    custom = folder(tmp_path, USERS)
    (custom / "apt.txt").write_text("less\n")
    config, _ = load_custom(custom)
    single, hub = render_singleuser(config).dockerfile, render(config, "h").dockerfile
    shared = hub.split("# --- layer: core")[0]
    assert single.startswith(shared) and "less" in single
    assert "configurable-http-proxy" not in single and "pamela" not in single and "idle-culler" not in single
    assert "COPY files/ /" in single and 'CMD ["jupyterhub-singleuser"]' in single
    files = dict((p, d) for p, d, _ in render_singleuser(config).files)
    assert files["files/shared/a.txt"] == b"a\n" and files["files/opt/conjuring/home_default/start.ipynb"] == b"{}\n"


def test_an_invalid_folder_is_refused_with_its_problems_and_nothing_written(tmp_path, capsys):
    custom = folder(tmp_path, "alice,alice-pw-1,no\nalice,other-pw-2,no\n", "[hub]\nmem_limit = \"lots\"\n")
    assert export(tmp_path, custom) == 1
    captured = capsys.readouterr()
    assert "users.csv" in captured.out and "mem_limit" in captured.out and "not exported" in captured.err
    assert not (tmp_path / "out").exists()


def test_a_used_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert export(tmp_path, folder(tmp_path, USERS)) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_memory_sizes_become_kubespawners_suffixes():
    assert [memory_limit(v) for v in ("512m", "2G", "1.5g", "1073741824")] == ["512M", "2G", "1.5G", 1073741824]
