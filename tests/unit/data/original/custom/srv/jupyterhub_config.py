c.Spawner.default_url = '/lab'
c.JupyterHub.admin_access = True
