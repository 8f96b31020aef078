"""conjuringd's JupyterHub configuration; the teacher's srv/jupyterhub_config.py is loaded after it.

Accounts are system users provisioned by provision.py; logins go through PAM.
Who may log in and who is admin is re-read from the run-time users file at each
login, so users.csv changes apply without a restart.
"""

import json
import os
import sys
from pathlib import Path

from jupyterhub.auth import PAMAuthenticator

c = get_config()  # noqa: F821 (provided by JupyterHub)

SECRETS = Path("/run/conjuring/secrets")
HUB = Path("/run/conjuring/hub")
DATA = Path("/srv/jupyterhub")
settings = json.loads((HUB / "settings.json").read_text())


def _accounts():
    spec = json.loads((SECRETS / "users.json").read_text())
    admins = {u["name"]: bool(u["admin"]) for u in spec["users"]}
    probe = (spec.get("probe") or {}).get("name")
    return admins, probe


class ConjuringAuthenticator(PAMAuthenticator):
    """PAM, restricted to the accounts of users.csv (and the daemon's probe account)."""

    async def authenticate(self, handler, data):
        result = await super().authenticate(handler, data)
        if result is None:
            return None
        name = result["name"] if isinstance(result, dict) else result
        admins, probe = _accounts()
        if name not in admins and name != probe:
            return None
        return {"name": name, "admin": admins.get(name, False)}

    def check_allowed(self, username, authentication=None):
        admins, probe = _accounts()
        return username in admins or username == probe


_admins, _probe = _accounts()
c.JupyterHub.authenticator_class = ConjuringAuthenticator
c.PAMAuthenticator.open_sessions = False
c.Authenticator.allowed_users = set(_admins) | ({_probe} if _probe else set())
c.Authenticator.admin_users = {name for name, admin in _admins.items() if admin}

c.JupyterHub.bind_url = "http://:8000"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = 8081
c.JupyterHub.db_url = f"sqlite:///{DATA}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(DATA / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = "/tmp/jupyterhub-proxy.pid"

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
