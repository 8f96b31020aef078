"""The per-file checkers: requirements (PEP 508), apt names, Dockerfile FROM, certificates, YAML lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjuringd.config.checks import check_apt, check_cert, check_dockerfile, check_environment, check_python, load_yaml
from conjuringd.config.requirements import check_line, check_requirements, logical_lines

CERT = (Path(__file__).parent / "data" / "certs" / "test-ca.crt").read_bytes()


@pytest.mark.parametrize(
    "line",
    [
        "numpy",
        "numpy==1.26.4",
        "numpy>=1.24,<2",
        "numpy >= 1.24 , < 2",
        "pandas[excel,performance]>=2.0",
        "pandas[ excel ]",
        "scipy~=1.11.0",
        "requests==2.*",
        "torch===2.1.0+cpu",
        "Django (>=4.2)",
        "a.b_c-d==1.0rc1",
        "pkg==1.0.post2.dev3",
        "pkg==1!2.0",
        "pkg!=1.0a1",
        "pkg==1.0+local.7",
        'pywin32; sys_platform == "win32"',
        "tomli ; python_version < '3.11'",
        'foo; (os_name == "posix" or python_version >= "3.12") and platform_machine != "arm64"',
        'foo; "linux" in sys_platform',
        'foo; platform_release not in "5.10"',
        "foo[x] @ https://example.org/foo-1.0-py3-none-any.whl",
        'foo @ git+https://github.com/o/foo@v1.0 ; python_version >= "3.8"',
        "https://example.org/foo-1.0.tar.gz",
        "git+https://github.com/o/foo.git#egg=foo",
        "foo==1.0 --hash=sha256:0123abcd",
        "--index-url https://pypi.example.org/simple",
        "-i https://pypi.example.org/simple",
        "--extra-index-url=https://extra.example.org/simple",
        "-f https://example.org/wheels/",
        "--trusted-host pypi.example.org",
        "--pre",
        "--prefer-binary",
        "--only-binary :all:",
        "--no-binary numpy",
    ],
)
def test_valid_requirement_lines(line):
    assert check_line(line) == ""


@pytest.mark.parametrize(
    "line, reason",
    [
        ("numpy 1.2", "expected a version comparison like '>=1.2'"),
        ("numpy=1.2", "expected a version comparison"),
        ("numpy>=", "'>=' needs a version"),
        ("numpy>=one", "'one' is not a valid version"),
        ("numpy>=1.*", "'1.*' is not a valid version"),
        ("numpy[x", "missing ']' after the extras"),
        ("numpy[x!]", "invalid extras"),
        ("numpy (>=1", "missing ')'"),
        ("-numpy", "unknown or unsupported option '-n'"),
        ("_private", "it should start with a package name"),
        ("foo; python_version", "an environment marker should look like"),
        ("foo; wrong_var == '1'", "unknown marker variable 'wrong_var'"),
        ("foo; python_version == '3' and", "an environment marker should look like"),
        ("foo; (python_version == '3'", "missing ')' in the environment marker"),
        ("foo;", "empty environment marker"),
        ("foo; python_version == '3' ~", "cannot read the environment marker"),
        ("foo @ not-a-url", "'@' should be followed by a URL"),
        ("foo @ file:///home/me/foo.whl", "is not an http(s) or VCS URL"),
        ("foo @ https://x/y.whl extra", "unexpected 'extra' after the URL"),
        ("./my-package", "is a local path or unsupported URL"),
        ("/abs/pkg.whl", "is a local path"),
        ("file:///tmp/x.whl", "is a local path"),
        ("-r base.txt", "'-r base.txt' includes another file, which cannot be followed"),
        ("--requirement=base.txt", "'--requirement base.txt' includes another file"),
        ("-c constraints.txt", "includes another file"),
        ("-e .", "editable installs (-e) are not supported"),
        ("--editable git+https://x/y", "editable installs"),
        ("--index-url", "option '--index-url' needs a value"),
        ("--find-links ./wheels", "needs an http(s) URL (a local path is not part of the build)"),
        ("--pre now", "option '--pre' takes no value"),
        ("--no-deps", "unknown or unsupported option '--no-deps'"),
        ("foo --install-option=x", "option '--install-option' is not supported on a requirement line"),
    ],
)
def test_invalid_requirement_lines(line, reason):
    assert reason in check_line(line)


def test_requirements_file_lines_comments_and_continuations():
    text = "# comment\nnumpy  # inline comment\n\nscipy \\\n  >=1.0\npandas ==\\\n\nurl#egg=x\nbad line\n"
    assert logical_lines(text) == [(2, "numpy"), (4, "scipy   >=1.0"), (6, "pandas =="), (8, "url#egg=x"), (9, "bad line")]
    problems = check_requirements(text, "custom/requirements.txt")
    assert [(p.line, p.file) for p in problems] == [(6, "custom/requirements.txt"), (8, "custom/requirements.txt"), (9, "custom/requirements.txt")]


def test_trailing_backslash_at_end_of_file():
    assert logical_lines("numpy \\") == [(1, "numpy")]


@pytest.mark.parametrize(
    "token", ["git", "python3-numpy", "libc6:amd64", "g++", "vim=2:9.0.1378-2", "nano/bookworm-backports", "r-base-core=4.2.2.20221110-2"]
)
def test_valid_apt_names(token):
    assert check_apt(token + "\n", "custom/apt.txt") == ((token,), [])


@pytest.mark.parametrize(
    "token, reason",
    [
        ("Git", "'Git' is not a valid Debian package name (use lowercase)"),
        ("a", "'a' is not a valid Debian package name"),
        ("foo_bar", "not a valid Debian package name"),
        ("-y", "looks like an apt-get option"),
        ("foo:AMD64", "invalid architecture 'AMD64'"),
        ("foo=", "invalid version ''"),
        ("foo=latest", "invalid version 'latest'"),
        ("foo/Bookworm", "invalid release 'Bookworm'"),
        ("foo;rm", "not a valid Debian package name"),
    ],
)
def test_invalid_apt_names(token, reason):
    packages, problems = check_apt(f"git\n{token}\n", "custom/apt.txt")
    assert packages == ("git",)
    assert [(p.line, p.file) for p in problems] == [(2, "custom/apt.txt")]
    assert reason in problems[0].message


@pytest.mark.parametrize(
    "text, image",
    [
        ("FROM debian:bookworm\n", "debian:bookworm"),
        ("# syntax=docker/dockerfile:1\n\nARG V=22.04\nFROM ubuntu:${V} AS base\n", "ubuntu:22.04"),
        ("from --platform=linux/amd64 python:3.11-slim as b\nRUN x\n", "python:3.11-slim"),
        ("FROM a AS one\nRUN x \\\n  y\nENV A=b\n", "a"),
    ],
)
def test_dockerfile_base_image(text, image):
    assert check_dockerfile(text, "custom/base.Dockerfile") == (image, [])


def test_dockerfile_with_two_stages_is_refused():
    image, problems = check_dockerfile("FROM a AS one\nRUN x \\\n  y\nFROM b\n", "custom/base.Dockerfile")
    assert [(p.line, p.severity.value) for p in problems] == [(4, "error")]
    assert "a second FROM: base.Dockerfile must be a single stage" in problems[0].message


def test_dockerfile_unresolved_variable_warns():
    image, problems = check_dockerfile("FROM ${IMAGE}\n", "f")
    assert image == "${IMAGE}" and [(p.line, p.severity.value) for p in problems] == [(1, "warning")]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_dockerfile_without_from(text):
    image, problems = check_dockerfile(text, "custom/base.Dockerfile")
    assert image == "" and [(p.line, p.message[:15]) for p in problems] == [(0, "has no FROM lin")]


def test_certificates():
    assert check_cert(CERT, "c") == []
    assert check_cert(b"junk\n" + CERT + b"more junk\n", "c") == []
    damaged = CERT.replace(b"MII", b"M*I", 1)
    assert "base64 body is damaged" in check_cert(damaged, "c")[0].message
    not_der = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"
    assert "not DER-encoded" in check_cert(not_der, "c")[0].message
    assert "private key" in check_cert(CERT + b"-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n", "c")[0].message
    assert "not a PEM certificate" in check_cert(b"\x30\x82\x01\x00binary DER", "c")[0].message


def test_yaml_error_lines():
    _, _, problems = load_yaml("a: 1\nb: [1, 2\nc: 3\n", "f")
    assert [p.line for p in problems] == [3]
    _, _, problems = load_yaml("a: 1\n\tb: 2\n", "f")
    assert [p.line for p in problems] == [2]
    _, _, problems = load_yaml("--- 1\n--- 2\n", "f")
    assert problems and "YAML syntax error" in problems[0].message
    _, _, problems = load_yaml("d: 2020-13-45\n", "f")
    assert problems and problems[0].line == 0


def test_environment_accepts_conda_export_format():
    text = "name: x\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - numpy>=1.24\n  - conda-forge::scipy\n  - pip\n  - pip:\n    - tqdm\nprefix: /opt/conda\n"
    assert check_environment(text, "f") == []


def test_python_syntax_is_checked_never_executed(tmp_path):
    marker = tmp_path / "ran"
    assert check_python(f"open({str(marker)!r}, 'w')\n", "f") == []
    assert not marker.exists()
    problems = check_python("c.A = 1\n\ndef broken(:\n", "f")
    assert [p.line for p in problems] == [3]
