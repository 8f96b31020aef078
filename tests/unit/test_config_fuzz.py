"""Property tests: random bytes, CSV, YAML and TOML never make the validator raise.

The only exception load_custom may raise is the project's own ConfigError (a
missing root folder); every parser returns problems instead. A check that
crashed would show up as an "internal error" problem, which is asserted absent.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conjuringd.config.checks import check_apt, check_cert, check_compose_override, check_dockerfile, check_environment, check_python
from conjuringd.config.load import load_custom
from conjuringd.config.problems import ConjuringError, Problem, has_errors
from conjuringd.config.requirements import check_requirements
from conjuringd.config.settings import parse_settings
from conjuringd.config.users import parse_users

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
field = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "1", "yes", "TRUE", "maybe", "root", "jane", "Jane", "a,b", 'q"uote', "x\ny", "\x00", " ", "\ufeff"]),
)


def assert_problems(problems) -> None:
    assert all(isinstance(p, Problem) for p in problems)
    assert not any("internal error" in p.message for p in problems)


@FUZZ
@given(st.binary(max_size=400))
def test_users_random_bytes(data):
    users, problems = parse_users(data, "custom/users.csv")
    assert_problems(problems)
    assert len({u.name.lower() for u in users}) == len(users)


@FUZZ
@given(st.lists(st.lists(field, min_size=0, max_size=5), max_size=12), st.sampled_from(["\n", "\r\n"]))
def test_users_random_csv(rows, newline):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows([["name", "password", "admin"]] + rows)
    users, problems = parse_users(buffer.getvalue().encode("utf-8", "surrogatepass"), "custom/users.csv")
    assert_problems(problems)
    for user in users:
        assert user.password and user.name == user.name.strip() and "\n" not in user.password
    assert users or has_errors(problems)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
yaml_data = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20,
)


@FUZZ
@given(yaml_data)
def test_environment_random_yaml_data(data):
    assert_problems(check_environment(yaml.safe_dump(data), "custom/environment.yml"))
    assert_problems(check_environment(yaml.safe_dump({"dependencies": data}), "custom/environment.yml"))
    assert_problems(check_compose_override(yaml.safe_dump(data), "custom/docker-compose.override.yml"))


@FUZZ
@given(text)
def test_yaml_and_text_checkers_random_text(value):
    assert_problems(check_environment(value, "f"))
    assert_problems(check_requirements(value, "f"))
    assert_problems(check_apt(value, "f")[1])
    assert_problems(check_dockerfile(value, "f")[1])
    assert_problems(check_python(value, "f"))
    assert_problems(check_cert(value.encode("utf-8", "surrogatepass"), "f"))


@FUZZ
@given(st.lists(st.sampled_from(["numpy", ">=", "1.2", "[", "]", ",", ";", "(", ")", " ", "@", "https://x/y", "and", "or",
                                 "python_version", "'3'", "\"x\"", "-r", "--hash=sha256:ab", "#", "\\\n", "==", "*", "in", "not"]),
                max_size=12))
def test_requirements_random_tokens(tokens):
    assert_problems(check_requirements("".join(tokens), "f"))
    assert_problems(check_requirements(" ".join(tokens), "f"))


toml_key = st.sampled_from(["hub", "network", "hotspot", "usb", "port", "ssid", "passphrase", "band", "channel", "accept",
                            "max_files", "mem_limit", "cpu_limit", "country", "serve", "x-y", "prot"])
toml_value = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=70)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(toml_key, children, max_size=4)),
    max_leaves=15,
)


def toml_string(value: str) -> str:
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in value
    )
    return f'"{escaped}"'


def to_toml(value) -> str:
    """A tiny TOML writer (inline tables and arrays) for generated data."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {to_toml(v)}" for k, v in value.items()) + "}"


@FUZZ
@given(st.dictionaries(toml_key, toml_value, max_size=5), st.booleans())
def test_settings_random_toml_data(data, machine):
    document = "\n".join(f"{toml_string(k)} = {to_toml(v)}" for k, v in data.items())
    settings_, problems = parse_settings(document.encode(), "custom/conjuring.toml", machine=machine)
    assert_problems(problems)
    assert not any("TOML syntax error" in p.message for p in problems), document


@FUZZ
@given(st.binary(max_size=300) | text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_settings_random_bytes(data):
    _, problems = parse_settings(data, "custom/conjuring.toml")
    assert_problems(problems)


FILES = ["users.csv", "apt.txt", "requirements.txt", "requirements-k.txt", "environment.yml", "environment-k.yml",
         "base.Dockerfile", "conjuring.toml", "srv/jupyterhub_config.py", "certs/a.crt", "docker-compose.override.yml",
         "shared/x", "home_default/.bashrc"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FILES), st.binary(max_size=200), min_size=1))
def test_load_custom_random_folder(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        try:
            config, problems = load_custom(root, root / "machine.toml")
        except ConjuringError:
            return
        assert_problems(problems)
        assert (config is None) == has_errors(problems)
        assert list(problems) == sorted(problems, key=lambda p: (p.file, p.line, p.severity.value, p.message))


def test_deeply_nested_inputs_become_problems():
    """Recursive parsers (YAML, TOML, markers, compile) must turn deep nesting into a problem."""
    deep = 20000
    cases = [
        check_environment("[" * deep, "f"),
        check_compose_override("{a: " * deep, "f"),
        parse_settings(b"a = " + b"[" * deep, "f")[1],
        parse_settings(b"a = " + b"{b = " * 2000, "f")[1],
        check_requirements("foo; " + "(" * deep + "python_version > '3'" + ")" * deep, "f"),
        check_python("(" * deep, "f"),
        check_python("x = " + "-" * 1_000_000 + "1", "f"),
        parse_users(b"h\na," + b"x" * 200_000 + b"\n", "f")[1],
    ]
    for problems in cases:
        assert problems and all(p.severity.value in ("error", "warning") for p in problems)
        assert_problems(problems)
