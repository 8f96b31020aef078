c.JupyterHub.admin_access = False
