"""A teacher's srv/jupyterhub_config.py (read as text by tests): the students named in STOCK get a stock server.

Their server is started as JupyterHub's LocalProcessSpawner would start jupyterhub-singleuser: no spare
kernel (conjuring_spare), no kernel provisioner of the fork server, no IPC kernel transport. The test moves
the fork server's socket away while such a student logs in, so the server itself is not forked either.
"""

from queued_spawner import QueuedSpawner  # noqa: E402 - beside the hub's jupyterhub_config.py in the image

STOCK = {"caz"}
OURS = ("--KernelManager.transport=ipc", "--ServerApp.kernel_manager_class=conjuring_spare.SpareKernelManager")


class StockForSome(QueuedSpawner):
    def get_env(self):
        env = super().get_env()
        if self.user.name in STOCK:
            env.pop("CONJURING_SPARE_KERNEL", None)
            env.pop("JUPYTER_DEFAULT_PROVISIONER_NAME", None)
        return env

    def get_args(self):
        args = super().get_args()
        return [a for a in args if a not in OURS] if self.user.name in STOCK else args


c.JupyterHub.spawner_class = StockForSome  # noqa: F821 - `c` is given by the hub's jupyterhub_config.py
