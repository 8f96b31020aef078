# Extra JupyterHub configuration, loaded after conjuringd's own.
# `c` is the JupyterHub config object, for example:
#   c.Spawner.default_url = "/lab"
# Changing this file restarts the hub (students' servers stop) but does not
# rebuild the image.
