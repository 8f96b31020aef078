c.Spawner.default_url = '/lab'
