"""`conjuringctl export z2jh CUSTOM OUTDIR`: a custom/ folder as a Zero to JupyterHub deployment.

OUTDIR gets image/ (the single-user image's build context, conjuringd.export.image), values.yaml
for the chart and users-secret.yaml (conjuringd.export.values), generated-passwords.txt when
users.csv has "(generated)" rows, and README.md with the two commands to deploy.

"(generated)" passwords: the one this box made for that name is kept (readable as root:
students log in to the cluster as they did on the box); a name the box has none for gets a new
one made by the export, never saved on the box. Both kinds are listed in generated-passwords.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import yaml

from conjuringd import atomic
from conjuringd.config.model import CustomConfig
from conjuringd.export.image import ExportError, render_singleuser
from conjuringd.export.values import Export, translate
from conjuringd.passwords import GeneratedPasswords, make_password

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
DEFAULT_IMAGE = "conjuring-singleuser"
RELEASE = "conjuring"
CHART_REPO = "https://hub.jupyter.org/helm-chart/"


class _Dumper(yaml.SafeDumper):
    """Block style (|) for multi-line strings: hub.extraConfig's Python stays readable in values.yaml."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def image_tag(context: bytes) -> str:
    return hashlib.sha256(context).hexdigest()[:12]


def passwords_for(config: CustomConfig, box: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(name -> password for every "(generated)" user, names the export made anew)."""
    made, new = {}, []
    for user in config.users:
        if user.generated:
            made[user.name] = box.get(user.name) or make_password()
            if user.name not in box:
                new.append(user.name)
    return made, tuple(new)


def readme(image: str, namespace: str, export: Export) -> str:
    generated = ("\n`generated-passwords.txt` (0600) lists the passwords of users.csv's `(generated)` rows: "
                 "the box's own where it had made one, else new ones. Hand them out, then delete the file.\n"
                 if export.generated else "")
    limits = export.values["singleuser"]
    return f"""# A conjuring custom/ folder for Zero to JupyterHub

Made by `conjuringctl export z2jh`. Deploy with a registry your cluster pulls from in place of
`{image.rsplit(':', 1)[0]}`, and kubectl/helm pointed at the cluster:

```sh
docker build -t {image} image/ && docker push {image}
helm upgrade --install {RELEASE} jupyterhub --repo {CHART_REPO} --namespace {namespace} --create-namespace --values values.yaml && kubectl apply --namespace {namespace} -f users-secret.yaml
```

The hub pod waits for the `conjuring-users` Secret (created by the last step) before it starts.

## What is here
- `image/`: the single-user image: the box's base, CA certificates, apt packages, conda/pip
  environments and kernels, `shared/` read-only at `/shared`, `home_default/` copied into a new
  home by the postStart hook (`/opt/conjuring/seed-home`), user `jovyan` (uid 1000, gid 100).
- `values.yaml`: that image; users.csv's names as `allowed_users`/`admin_users`; a small
  authenticator (`hub.extraConfig`) reading the passwords from the Secret (`hub.extraEnv`);
  memory/CPU limits {limits.get('memory', {}).get('limit', 'none')}/{limits.get('cpu', {}).get('limit', 'none')};
  the culler from `idle_timeout`; one persistent volume per student (dynamic storage); the prePuller.
- `users-secret.yaml`: the passwords (keep it out of version control).
{generated}
## What does not carry over
- The hotspot and the `[network]` settings: the cluster's ingress or load balancer serves the hub.
- USB sticks: a changed course is exported again and deployed with the same two commands.
- Student homes: back them up on the box (`conjuringctl backup`) and copy them into the volumes.
- The box's hub parts: its `srv/jupyterhub_config.py`, login throttling, memory guard, fork server,
  spare kernels and prewarming; `[hub] preload`, `prewarm`, `shm_size` and `gpus`.
"""


def write_export(config: CustomConfig, outdir: Path, image_name: str, namespace: str,
                 box_passwords: dict[str, str]) -> tuple[Export, tuple[str, ...], str]:
    rendered = render_singleuser(config)
    tag = image_tag(rendered.context_tar())
    made, new = passwords_for(config, box_passwords)
    export = translate(config, image_name, tag, made)
    context = outdir / "image"
    for path, data, mode in (("Dockerfile", rendered.dockerfile.encode(), 0o644),) + rendered.files:
        target = context / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    (outdir / "values.yaml").write_text("# conjuringctl export z2jh: values for the jupyterhub chart\n"
                                        + yaml.dump(export.values, Dumper=_Dumper, sort_keys=False, width=120))
    atomic.write_bytes(outdir / "users-secret.yaml", yaml.safe_dump(export.secret, sort_keys=False).encode(), mode=0o600)
    if export.generated:
        listing = "".join(f"{name}\t{password}\n" for name, password in export.generated)
        atomic.write_bytes(outdir / "generated-passwords.txt", listing.encode(), mode=0o600)
    (outdir / "README.md").write_text(readme(f"{image_name}:{tag}", namespace, export))
    return export, new, tag


def cmd_export_z2jh(args: argparse.Namespace) -> int:
    from conjuringd.ctl import _load_and_report, _paths

    outdir = Path(args.outdir)
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        print(f"{outdir}: exists and is not an empty folder: give a new one", file=sys.stderr)
        return EXIT_USAGE
    loaded = _load_and_report(Path(args.path), args.machine_toml)
    if loaded is None:
        return EXIT_USAGE
    config, errors, _ = loaded
    if errors:
        print(f"not exported: {errors} error(s) in {args.path}", file=sys.stderr)
        return EXIT_INVALID
    box = GeneratedPasswords(_paths(args).secrets).read() if any(u.generated for u in config.users) else {}
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        export, new, tag = write_export(config, outdir, args.image, args.namespace, box)
    except ExportError as exc:
        print(f"not exported: {exc}", file=sys.stderr)
        return EXIT_INVALID
    kept = [name for name, _ in export.generated if name not in new]
    print(f"exported {args.path} to {outdir}: image {args.image}:{tag}, {len(config.users)} user(s)"
          f" ({len(config.admins)} admin(s)); see {outdir / 'README.md'}")
    if export.generated:
        print(f"(generated) passwords: {len(kept)} kept from this box, {len(new)} made anew "
              f"({', '.join(new) or '-'}): listed in {outdir / 'generated-passwords.txt'}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="turn a custom/ folder into another deployment's files")
    kinds = p.add_subparsers(dest="kind", required=True)
    z = kinds.add_parser("z2jh", help="a single-user image, values.yaml and a Secret for the Zero to JupyterHub chart")
    z.add_argument("path", type=Path, help="the custom/ folder")
    z.add_argument("outdir", type=Path, help="a new (or empty) folder for the export")
    z.add_argument("--image", default=DEFAULT_IMAGE, help=f"the image's name in your registry (default {DEFAULT_IMAGE})")
    z.add_argument("--namespace", default=RELEASE, help=f"the Kubernetes namespace in the README's commands (default {RELEASE})")
    z.add_argument("--machine-toml", type=Path, default=None, help="machine conjuring.toml to merge")
    z.set_defaults(func=cmd_export_z2jh)
