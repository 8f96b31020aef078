"""A small HTTP client for the hub: login with xsrf, health, REST calls. Standard library only.

Used by the docker adapter's probe login, by the tests and by scripts/run-main-job.sh.
Blocking: call it from an executor inside the daemon.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


class HubSession:
    """One browser-like session against a hub at `base` (e.g. http://127.0.0.1:8989)."""

    def __init__(self, base: str, timeout: float = 30):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.cookies = http.cookiejar.CookieJar()
        processor = urllib.request.HTTPCookieProcessor(self.cookies)
        self.opener = urllib.request.build_opener(processor)
        self.no_redirect = urllib.request.build_opener(processor, _NoRedirect)
        self.last_url = ""  # where the last request ended up after redirects

    def request(self, method: str, path: str, body=None, headers=None, follow=True):
        """(status, headers, body bytes); never raises on HTTP error statuses."""
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if isinstance(body, (dict, list)):
            req.add_header("Content-Type", "application/json")
        xsrf = self.cookie("_xsrf", path)
        if xsrf and method not in ("GET", "HEAD"):
            req.add_header("X-XSRFToken", xsrf)
        opener = self.opener if follow else self.no_redirect
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                self.last_url = resp.geturl()
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            self.last_url = exc.geturl()
            return exc.code, exc.headers, exc.read()

    def cookie(self, name: str, path: str = "/") -> str:
        """The value of cookie `name` that a request to `path` would carry (the most specific one)."""
        best, best_len = "", -1
        for cookie in self.cookies:
            if cookie.name == name and path.startswith(cookie.path.rstrip("/") or "/") and len(cookie.path) > best_len:
                best, best_len = cookie.value, len(cookie.path)
        return best

    def login(self, username: str, password: str) -> int:
        """POST /hub/login with the form's _xsrf; returns the status (302 = logged in, 403 = refused)."""
        status, _, page = self.request("GET", "/hub/login")
        if status != 200:
            return status
        match = re.search(rb'name="_xsrf"\s+value="([^"]+)"', page)
        xsrf = match.group(1).decode() if match else self.cookie("_xsrf", "/hub/")
        form = urllib.parse.urlencode({"username": username, "password": password, "_xsrf": xsrf}).encode()
        status, headers, _ = self.request(
            "POST", "/hub/login?next=", form, {"Content-Type": "application/x-www-form-urlencoded"}, follow=False
        )
        if status == 302 and "/hub/login" in (headers.get("Location") or ""):
            return 403
        return status

    def wait_lab(self, username: str, timeout: float = 180) -> int:
        """Poll /user/<name>/lab until the user's own server answers it (spawning it on the way)."""
        deadline = time.monotonic() + timeout
        self.request("GET", f"/hub/spawn/{username}")  # starts the server (a 424 page would not)
        status = 0
        while time.monotonic() < deadline:
            status, _, _ = self.request("GET", f"/user/{username}/lab")
            served_by_hub = urllib.parse.urlsplit(self.last_url).path.startswith("/hub/")
            if status == 200 and not served_by_hub:
                return status
            time.sleep(1)
        return status


def health(base: str, timeout: float = 3) -> bool:
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/hub/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def api(base: str, token: str, method: str, path: str, body=None, timeout: float = 10):
    """(status, decoded JSON or None) for the hub REST API with a token."""
    session = HubSession(base, timeout)
    status, _, data = session.request(method, "/hub/api" + path, body, {"Authorization": f"token {token}"})
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, None
