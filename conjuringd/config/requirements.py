"""A small checker for pip requirements files (PEP 508 lines plus the pip options that make sense).

Accepted: `name[extras] specifiers ; markers`, `name @ url ; markers`, bare
http(s)/git URLs, `#` comments, `\\` line continuations, `--hash` on a
requirement, and the index options (`-i/--index-url`, `--extra-index-url`,
`-f/--find-links` with a URL, `--trusted-host`, `--pre`, `--prefer-binary`,
`--only-binary`, `--no-binary`, `--require-hashes`, `--no-index`).
Refused: `-r`/`-c` includes (the other file is not part of the build), `-e`
editable installs and local paths (not in the build either), unknown options.
"""

from __future__ import annotations

import re

from conjuringd.config.problems import Problem, error

NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
OP = re.compile(r"===|~=|==|!=|<=|>=|<|>")
VERSION = re.compile(
    r"v?(?:\d+!)?\d+(?:\.\d+)*"
    r"(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"(?:-\d+|[-_.]?(?:post|rev|r)[-_.]?\d*)?"
    r"(?:[-_.]?dev[-_.]?\d*)?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?",
    re.IGNORECASE,
)
WILDCARD = re.compile(r"v?(?:\d+!)?\d+(?:\.\d+)*\.\*", re.IGNORECASE)
URL = re.compile(r"(?:https?|git\+https?|git\+ssh|git\+git|hg\+https?|svn\+https?|bzr\+https?)://\S+", re.IGNORECASE)
MARKER_VARS = frozenset(
    """python_version python_full_version os_name sys_platform platform_release
    platform_system platform_version platform_machine platform_python_implementation
    implementation_name implementation_version extra""".split()
)
MARKER_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b)"
    r"|(?P<paren>[()])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
GLOBAL_OPTIONS = {
    "-i": "url", "--index-url": "url", "--extra-index-url": "url", "-f": "url", "--find-links": "url",
    "--trusted-host": "host", "--only-binary": "value", "--no-binary": "value", "--use-feature": "value",
    "--pre": None, "--prefer-binary": None, "--require-hashes": None, "--no-index": None,
}
MAX_MARKER_DEPTH = 32
INCLUDES = ("-r", "--requirement", "-c", "--constraint")
EDITABLE = ("-e", "--editable")


def check_requirements(text: str, file: str) -> list[Problem]:
    problems = []
    for line, content in logical_lines(text):
        message = check_line(content)
        if message:
            problems.append(error(file, line, message))
    return problems


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first physical line, content without comment) for every non-empty logical line."""
    result, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        content = re.sub(r"(^|\s)#.*$", "", pending + raw).strip()
        pending = ""
        if content:
            result.append((start, content))
    if pending and (content := re.sub(r"(^|\s)#.*$", "", pending).strip()):
        result.append((start, content))
    return result


def check_line(content: str) -> str:
    """'' when the line is acceptable, else a plain-English reason."""
    if content.startswith("-"):
        return _check_option(content)
    requirement, options = _split_options(content)
    for option in options:
        if not re.fullmatch(r"--hash[= ]\s*[a-z0-9]+:[0-9a-fA-F]+", option):
            return f"option '{option.split()[0].split('=')[0]}' is not supported on a requirement line (only --hash)"
    if re.match(r"[a-z][a-z0-9+.-]*://", requirement, re.IGNORECASE) or requirement.startswith(("file:", ".", "/", "~")):
        if URL.fullmatch(requirement):
            return ""
        return f"'{_cut(requirement)}' is a local path or unsupported URL: it is not part of the build (use a package name or an http(s)/git URL)"
    reason = check_requirement(requirement)
    return f"cannot parse requirement '{_cut(requirement)}': {reason}" if reason else ""


def _split_options(content: str) -> tuple[str, list[str]]:
    parts = re.split(r"\s+(?=--?[A-Za-z])", content)
    return parts[0], parts[1:]


def _check_option(content: str) -> str:
    if content.startswith("--"):
        match = re.match(r"(--[A-Za-z][A-Za-z0-9-]*)(?:(?:=|\s+)(.*))?$", content)
        if not match:
            return f"cannot parse option '{_cut(content)}'"
        option, value = match.group(1), (match.group(2) or "").strip()
    else:  # "-r file.txt", "-rfile.txt", "-ihttps://..."
        option, value = content[:2], content[2:].strip()
    if option in INCLUDES:
        return f"'{(option + ' ' + value).strip()}' includes another file, which cannot be followed: put its requirements in this file"
    if option in EDITABLE:
        return "editable installs (-e) are not supported: list the package by name, or as 'name @ https://...'"
    if option not in GLOBAL_OPTIONS:
        return f"unknown or unsupported option '{option}'"
    kind = GLOBAL_OPTIONS[option]
    if kind is None:
        return f"option '{option}' takes no value" if value else ""
    if not value:
        return f"option '{option}' needs a value"
    if kind == "url" and not re.fullmatch(r"https?://\S+", value):
        return f"'{option}' needs an http(s) URL (a local path is not part of the build), not '{_cut(value)}'"
    return ""


def check_requirement(text: str) -> str:
    """PEP 508: '' when `text` is a valid dependency specification, else why not."""
    match = NAME.match(text)
    if not match:
        return "it should start with a package name"
    rest = text[match.end():].lstrip()
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return "missing ']' after the extras"
        extras = [e.strip() for e in rest[1:end].split(",")]
        if rest[1:end].strip() and not all(NAME.fullmatch(e) for e in extras):
            return f"invalid extras [{rest[1:end]}]"
        rest = rest[end + 1:].lstrip()
    if rest.startswith("@"):
        return _check_url_form(rest[1:].strip())
    specifiers, semicolon, marker = rest.partition(";")
    reason = _check_specifiers(specifiers.strip())
    if reason:
        return reason
    return _check_marker(marker) if semicolon else ""


def _check_url_form(rest: str) -> str:
    url, _, after = rest.partition(" ")
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", url, re.IGNORECASE):
        return "'@' should be followed by a URL"
    if not URL.fullmatch(url):
        return f"'{_cut(url)}' is not an http(s) or VCS URL the build can reach"
    after = after.strip()
    if not after:
        return ""
    if not after.startswith(";"):
        return f"unexpected '{_cut(after)}' after the URL"
    return _check_marker(after[1:])


def _check_specifiers(text: str) -> str:
    if text.startswith("("):
        if not text.endswith(")"):
            return "missing ')'"
        text = text[1:-1].strip()
    if not text:
        return ""
    for clause in text.split(","):
        clause = clause.strip()
        match = OP.match(clause)
        if not match:
            return f"expected a version comparison like '>=1.2' or '==2.0', not '{_cut(clause)}'"
        op, version = match.group(), clause[match.end():].strip()
        if not version:
            return f"'{op}' needs a version"
        if op == "===":
            if re.search(r"\s", version):
                return f"invalid version '{_cut(version)}'"
        elif not (VERSION.fullmatch(version) or (op in ("==", "!=") and WILDCARD.fullmatch(version))):
            return f"'{_cut(version)}' is not a valid version"
    return ""


def _check_marker(text: str) -> str:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = MARKER_TOKEN.match(text, pos)
        if not match or match.end() == pos:
            return f"cannot read the environment marker at '{_cut(text[pos:].strip())}'"
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "word" and value in ("and", "or"):
            kind = value
        elif kind == "word" and value not in MARKER_VARS:
            return f"unknown marker variable '{value}'"
        tokens.append((kind, value))
        pos = match.end()
    parser = _MarkerParser(tokens)
    return parser.parse()


class _MarkerParser:
    """marker := and_expr ('or' and_expr)*; and_expr := atom ('and' atom)*; atom := '(' marker ')' | var op var."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def parse(self) -> str:
        if not self.tokens:
            return "empty environment marker after ';'"
        reason = self._or()
        if not reason and self.pos < len(self.tokens):
            reason = f"unexpected '{self.tokens[self.pos][1]}' in the environment marker"
        return reason

    def _peek(self) -> str:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else ""

    def _or(self) -> str:
        reason = self._and()
        while not reason and self._peek() == "or":
            self.pos += 1
            reason = self._and()
        return reason

    def _and(self) -> str:
        reason = self._atom()
        while not reason and self._peek() == "and":
            self.pos += 1
            reason = self._atom()
        return reason

    def _atom(self) -> str:
        if self._peek() == "paren" and self.tokens[self.pos][1] == "(":
            self.pos += 1
            self.depth += 1
            if self.depth > MAX_MARKER_DEPTH:
                return "the environment marker is nested too deeply"
            reason = self._or()
            self.depth -= 1
            if reason:
                return reason
            if self._peek() != "paren" or self.tokens[self.pos][1] != ")":
                return "missing ')' in the environment marker"
            self.pos += 1
            return ""
        kinds = [k for k, _ in self.tokens[self.pos:self.pos + 3]]
        if len(kinds) == 3 and kinds[0] in ("str", "word") and kinds[1] == "op" and kinds[2] in ("str", "word"):
            self.pos += 3
            return ""
        return "an environment marker should look like python_version >= \"3.10\""


def _cut(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
