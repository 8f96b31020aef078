"""The hub image: Dockerfile rendering and the files that run inside the container."""
