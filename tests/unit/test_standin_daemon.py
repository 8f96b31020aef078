"""The test daemon launcher (tests/support/standin_daemon.py) prunes only the hub images it built itself."""

from __future__ import annotations

from dataclasses import dataclass, field

from conjuringd.adapters.docker_labels import LABEL_IMAGE
from conjuringd.paths import Paths
from tests.support import standin_daemon


@dataclass
class Image:
    id: str
    labels: dict


@dataclass
class Images:
    present: list
    removed: list = field(default_factory=list)

    def list(self, filters=None):
        return [i for i in self.present if LABEL_IMAGE in i.labels]

    def remove(self, ident):
        self.removed.append(ident)


@dataclass
class Containers:
    def get(self, name):
        import docker.errors

        raise docker.errors.NotFound("no container")


@dataclass
class Client:
    images: Images
    containers: Containers = field(default_factory=Containers)


def test_only_its_own_old_images_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv(standin_daemon.CONTAINER_ENV, "conjuring-unit")
    hub = standin_daemon.NamedHub(Paths(tmp_path / "s", tmp_path / "e", tmp_path / "r"))
    hub.built = {"mine-old", "mine-new"}
    images = Images([Image(f"id-{h}", {LABEL_IMAGE: h}) for h in ("mine-old", "mine-new", "another-tests")])
    hub._prune(Client(images), frozenset({"mine-new"}))
    assert images.removed == ["id-mine-old"]
    assert hub.name == "conjuring-unit" and hub.previous_name == "conjuring-unit-previous"
