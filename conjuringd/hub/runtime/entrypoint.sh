#!/bin/sh
# The hub container's entrypoint: provision accounts from the run-time secrets, then run the hub.
set -e
/usr/bin/python3 /opt/conjuring/runtime/provision.py
mkdir -p /srv/jupyterhub
chmod 700 /srv/jupyterhub
# all of the teacher's srv/ (e.g. an SSL key), root-only, as the original Conjuring copied it there
/usr/bin/python3 /opt/conjuring/runtime/srvcopy.py
cd /srv/jupyterhub
# Students' servers and kernels are forked from this pre-imported process (conjuring_forkserver.py); it gets
# an empty environment because a forked child's /proc/<pid>/environ shows it. If it is not running, servers
# and kernels start the usual way. TITLE_ROOM is room for the children's command lines (see show_as).
(set +e; while :; do
    env -i PATH="$PATH" LANG=C.UTF-8 TITLE_ROOM="$(printf '%0256d' 0)" /opt/conjuring/venv/bin/python -m conjuring_forkserver
    echo "conjuring-forkserver exited ($?); restarting in 1 s" >&2
    sleep 1
done) </dev/null &
exec jupyterhub -f /opt/conjuring/runtime/jupyterhub_config.py
