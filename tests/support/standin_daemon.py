"""The real conjuringd process for hub tests that need the micromamba STAND-IN or their own container name.

Run as `python -m tests.support.standin_daemon DAEMON-ARGS...` (tests/support/daemon.py `Daemon(module=...)`).
Two things differ from `python -m conjuringd.daemon`, both test-only and both named here:
- images are rendered by tests/support/condastandin.py's `standin_render`: the micromamba download step is a
  COPY of the stand-in (conda channels are unreachable from the test machine), every other step is the product's;
- the hub container is named $CONJURING_TEST_CONTAINER (and its -previous), so the test never touches the
  `conjuring` container of another test or a real hub on the machine;
- it prunes only hub images it built itself: the product's pruning removes every conjuring/hub image it does not
  use, right on a box with one daemon, but on a shared test machine that is other tests' images (and caches).
"""

from __future__ import annotations

import os
import sys

from conjuringd import daemon
from conjuringd.adapters import docker as docker_adapter
from tests.support.condastandin import standin_render

CONTAINER_ENV = "CONJURING_TEST_CONTAINER"


class NamedHub(docker_adapter.DockerHub):
    def __init__(self, paths, **kwargs):
        super().__init__(paths, container_name=os.environ[CONTAINER_ENV], **kwargs)
        self.built: set[str] = set()

    async def build_image(self, desired, progress) -> None:
        await super().build_image(desired, progress)
        self.built.add(desired.hashes.image)

    def _prune(self, client, keep: frozenset[str]) -> None:
        present = {img.labels.get(docker_adapter.LABEL_IMAGE, "")
                   for img in client.images.list(filters={"label": docker_adapter.LABEL_IMAGE})}
        super()._prune(client, keep | frozenset(present - self.built))


def main() -> None:
    docker_adapter.render = standin_render
    docker_adapter.DockerHub = NamedHub  # daemon.build_adapters imports it from the module when it runs
    daemon.main(sys.argv[1:])


if __name__ == "__main__":
    main()
