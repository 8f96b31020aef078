c.Spawner.default_url = (
