#!/bin/sh
# The hub container's entrypoint: provision accounts from the run-time secrets, then run the hub.
set -e
/usr/bin/python3 /opt/conjuring/runtime/provision.py
mkdir -p /srv/jupyterhub
chmod 700 /srv/jupyterhub
cd /srv/jupyterhub
exec jupyterhub -f /opt/conjuring/runtime/jupyterhub_config.py
