"""Pure translation of a validated configuration into the Zero to JupyterHub chart's values and a Secret.

The passwords never enter values.yaml: they go into one Kubernetes Secret (SECRET_NAME, key
SECRET_KEY, a JSON object name -> password), which the hub pod gets as the environment variable
USERS_ENV (hub.extraEnv, secretKeyRef); AUTH_CONFIG, run by the chart's hub as hub.extraConfig,
checks a login against it. The names (allowed and admin users) are not secret and stay in values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from conjuringd.config.model import CustomConfig
from conjuringd.export.image import GID, HOME, SEED_HOME, UID

SECRET_NAME = "conjuring-users"
SECRET_KEY = "users.json"
USERS_ENV = "CONJURING_USERS_JSON"
CULL_EVERY_MAX = 600  # the chart's default --cull-every

AUTH_CONFIG = f'''# conjuringctl export z2jh: users.csv's logins, the passwords from the {SECRET_NAME} Secret
import hmac
import json
import os

from jupyterhub.auth import Authenticator


class ConjuringUsersAuthenticator(Authenticator):
    """Name and password against the JSON object in ${USERS_ENV} (users.csv of the exported folder)."""

    async def authenticate(self, handler, data):
        known = json.loads(os.environ.get("{USERS_ENV}") or "{{}}")
        name, password = data.get("username", ""), data.get("password", "")
        expected = known.get(name)
        if isinstance(expected, str) and hmac.compare_digest(expected.encode(), password.encode()):
            return name
        return None


c.JupyterHub.authenticator_class = ConjuringUsersAuthenticator
'''


@dataclass(frozen=True)
class Export:
    values: dict[str, Any]
    secret: dict[str, Any]  # the Secret manifest
    generated: tuple[tuple[str, str], ...]  # (name, password) made by this export for "(generated)" users


def memory_limit(box: str) -> str | int:
    """[hub] mem_limit ("512m", "2G", "1.5g", "1073741824") as KubeSpawner's ByteSpecification reads it:
    K/M/G/T are powers of 1024, as Docker's, but upper case only; a plain number (bytes) must be a number."""
    if box[-1:].isalpha():
        return box[:-1] + box[-1].upper()
    return int(float(box))


def cull(idle_timeout: int) -> dict[str, Any]:
    if idle_timeout <= 0:
        return {"enabled": False}
    # users stay (the box never deletes a student); admins' servers are culled as the box culls them
    return {"enabled": True, "users": False, "adminUsers": True, "timeout": idle_timeout,
            "every": max(10, min(CULL_EVERY_MAX, idle_timeout // 2))}


def singleuser(config: CustomConfig, image: str, tag: str) -> dict[str, Any]:
    hub = config.settings.hub
    out: dict[str, Any] = {
        "image": {"name": image, "tag": tag},
        "cmd": "jupyterhub-singleuser",
        "defaultUrl": "/lab",
        "uid": UID,
        "fsGid": GID,
        "startTimeout": hub.spawn_timeout,
        # one volume per student from the cluster's default StorageClass, kept when the server stops
        "storage": {"type": "dynamic", "homeMountPath": HOME},
        "lifecycleHooks": {"postStart": {"exec": {"command": [SEED_HOME]}}},
    }
    if hub.mem_limit:
        # guarantee null: Kubernetes then requests what the limit is (the chart's 1G default could exceed it)
        out["memory"] = {"limit": memory_limit(hub.mem_limit), "guarantee": None}
    if hub.cpu_limit:
        out["cpu"] = {"limit": float(hub.cpu_limit)}
    return out


def users_secret(passwords: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET_NAME, "labels": {"app.kubernetes.io/managed-by": "conjuringctl"}},
        "stringData": {SECRET_KEY: json.dumps(passwords, sort_keys=True)},
    }


def translate(config: CustomConfig, image: str, tag: str, made: dict[str, str]) -> Export:
    """Values and Secret for `config`; `made` holds a password for every "(generated)" user."""
    passwords = {u.name: made[u.name] if u.generated else u.password for u in config.users}
    hub: dict[str, Any] = {
        "config": {"Authenticator": {"allowed_users": sorted(u.name for u in config.users),
                                     "admin_users": sorted(u.name for u in config.admins)}},
        "extraEnv": {USERS_ENV: {"valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}}},
        "extraConfig": {"conjuring-users": AUTH_CONFIG},
    }
    if config.settings.hub.concurrent_spawn_limit:
        hub["concurrentSpawnLimit"] = config.settings.hub.concurrent_spawn_limit
    values = {
        "hub": hub,
        "singleuser": singleuser(config, image, tag),
        "cull": cull(config.settings.hub.idle_timeout),
        # pulls singleuser.image onto every node before an upgrade (hook) and onto new nodes (continuous)
        "prePuller": {"hook": {"enabled": True}, "continuous": {"enabled": True}},
    }
    generated = tuple((u.name, made[u.name]) for u in config.users if u.generated)
    return Export(values, users_secret(passwords), generated)
