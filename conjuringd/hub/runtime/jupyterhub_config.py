"""conjuringd's JupyterHub configuration; the teacher's srv/jupyterhub_config.py is loaded after it.

Accounts are system users provisioned by provision.py. A login is checked
against the run-time users file (users.csv's passwords, which the teacher
already holds in clear), re-read at each login so users.csv changes apply
without a restart. Not through PAM: its yescrypt hash costs 36 ms of CPU per
login, one login at a time, which a class logging in at once queues behind
(1.1 s for the 30th student). Instead every attempt waits for its turn before
its password is compared (login_throttle.py): a growing delay per name after
wrong passwords, and a bounded rate for the whole hub, so parallel guessing
waits in line, and existing and unknown names take the same time to fail.
"""

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

from jupyterhub.auth import Authenticator
from tornado import web

c = get_config()  # noqa: F821 (provided by JupyterHub)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_throttle import Busy, LoginThrottle  # noqa: E402 - beside this file in the image

SECRETS = Path("/run/conjuring/secrets")
HUB = Path("/run/conjuring/hub")
DATA = Path("/srv/jupyterhub")
settings = json.loads((HUB / "settings.json").read_text())


def _accounts():
    """name -> account ("password", "admin") of users.csv's students and teachers and the daemon's probe."""
    spec = json.loads((SECRETS / "users.json").read_text())
    accounts = {u["name"]: u for u in spec["users"]}
    if spec.get("probe"):
        accounts[spec["probe"]["name"]] = dict(spec["probe"], admin=False)
    return accounts


def _digest(text):
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class ConjuringAuthenticator(Authenticator):
    """The accounts of users.csv (and the daemon's probe account) with their users.csv passwords."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.throttle = LoginThrottle()

    async def authenticate(self, handler, data):
        # accounts are lower case (users.csv's names are folded, as JupyterHub's normalize_username does):
        # "Jane" logs in as jane, and counts against jane's back-off, whatever case the guesses use
        name, password = str(data.get("username", ""))[:256].lower(), str(data.get("password", ""))
        try:
            at = self.throttle.turn(name, time.monotonic())
        except Busy as busy:  # refused before anything is compared: the answer tells nothing
            raise web.HTTPError(429, str(busy)) from None
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        account = _accounts().get(name)
        expected = account["password"] if account else os.urandom(16).hex()  # same work for unknown names
        if hmac.compare_digest(_digest(expected), _digest(password)) and account:
            self.throttle.succeeded(name, time.monotonic())
            return {"name": name, "admin": bool(account["admin"])}
        self.throttle.failed(name, time.monotonic())
        return None

    def check_allowed(self, username, authentication=None):
        return username in _accounts()


_known = _accounts()
c.JupyterHub.authenticator_class = ConjuringAuthenticator
c.Authenticator.allowed_users = set(_known)
c.Authenticator.admin_users = {name for name, account in _known.items() if account["admin"]}

c.JupyterHub.bind_url = "http://:8000"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = 8081
c.JupyterHub.db_url = f"sqlite:///{DATA}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(DATA / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = "/tmp/jupyterhub-proxy.pid"

from queued_spawner import QueuedSpawner  # noqa: E402 - beside this file in the image

# A class logging in at once is queued (the spawn-pending page shows each student's place), never refused:
# at most `concurrent_spawn_limit` servers boot at a time (0 = one per CPU); JupyterHub's own limit, which
# answers the extra students with an error page, is off.
QueuedSpawner.slot_count = int(settings["concurrent_spawn_limit"]) or (os.cpu_count() or 1)
c.JupyterHub.spawner_class = QueuedSpawner
c.JupyterHub.concurrent_spawn_limit = 0
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = int(settings["spawn_timeout"])
c.Spawner.http_timeout = int(settings["http_timeout"])
if settings.get("mem_limit"):
    c.Spawner.mem_limit = settings["mem_limit"]
if settings.get("cpu_limit"):
    c.Spawner.cpu_limit = float(settings["cpu_limit"])

_token_file = SECRETS / "service-token"
services, roles = [], []
if _token_file.exists():
    services.append({"name": "conjuringd", "api_token": _token_file.read_text().strip()})
    # the admin role: only admins may grant admin (users.csv's admin column, applied live)
    roles.append({"name": "admin", "services": ["conjuringd"]})
if settings.get("mem_limit") or settings.get("cpu_limit"):
    # the local spawner cannot enforce mem_limit/cpu_limit itself: memguard.py (beside this file) does, per student UID
    services.append({"name": "memguard", "command": [
        sys.executable, str(Path(__file__).resolve().parent / "memguard.py"), f"--limit={settings.get('mem_limit') or ''}",
        f"--cpus={float(settings.get('cpu_limit') or 0)}", "--min-uid=2000"]})
if int(settings.get("idle_timeout", 0)) > 0:
    services.append(
        {"name": "idle-culler", "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={int(settings['idle_timeout'])}"]}
    )
    roles.append(
        {"name": "idle-culler", "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"], "services": ["idle-culler"]}
    )
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles

_extra = HUB / "srv" / "jupyterhub_config.py"
if _extra.is_file():
    exec(compile(_extra.read_text(), str(_extra), "exec"), {"c": c, "get_config": get_config, "__file__": str(_extra)})  # noqa: F821
