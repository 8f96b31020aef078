"""The reconciler loop against in-memory fakes of the adapter Protocols (pure logic only)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from conjuringd.config.problems import BuildFailed, HubUnhealthy, TransientError
from conjuringd.paths import Paths
from conjuringd.reconcile.execute import Adapters
from conjuringd.reconcile.loop import Reconciler
from conjuringd.reconcile.model import ContainerState, HubObserved
from conjuringd.reconcile.triggers import Heartbeat, Triggers
from conjuringd.status import StatusBoard
from conjuringd.store import SnapshotStore

REPO = Path(__file__).resolve().parents[2]


class FakeHub:
    """Remembers images and one container, like a tiny Docker; counts what it was asked to do."""

    def __init__(self):
        self.images: set[str] = set()
        self.container: ContainerState | None = None
        self.calls: list[str] = []
        self.fail_build_for: set[str] = set()
        self.unreachable = 0  # fail this many observations with TransientError

    async def observe(self):
        if self.unreachable:
            self.unreachable -= 1
            raise TransientError("docker unreachable")
        return HubObserved(frozenset(self.images), self.container)

    async def build_image(self, desired, progress):
        self.calls.append("build")
        if desired.hashes.image in self.fail_build_for:
            raise BuildFailed(desired.hashes.image, "step 4/9: apt-get install nosuchpkg", ("E: Unable to locate",))
        self.images.add(desired.hashes.image)

    async def replace_container(self, desired, progress):
        self.calls.append("replace")
        h = desired.hashes
        self.container = ContainerState(f"c{len(self.calls)}", h.image, h.restart, True, h.users, h.files)

    async def start_container(self, container_id):
        self.calls.append("start")

    async def sync_users(self, desired):
        self.calls.append("sync_users")
        self.container = ContainerState(**{**self.container.__dict__, "users_hash": desired.hashes.users})

    async def sync_files(self, desired):
        self.calls.append("sync_files")
        self.container = ContainerState(**{**self.container.__dict__, "files_hash": desired.hashes.files})

    async def prune_images(self, keep):
        pass

    async def close(self):
        pass


class Silent:
    def notify(self, state):
        pass


@pytest.fixture
def setup(tmp_path):
    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    shutil.copytree(REPO / "custom", paths.local_custom)
    hub = FakeHub()
    store = SnapshotStore(paths)
    status = StatusBoard(paths.status_file, Silent())
    reconciler = Reconciler(store, Adapters(hub=hub), status, Triggers(quiet=0.01), Heartbeat(), hub_enabled=True)
    return paths, hub, reconciler


async def test_first_pass_builds_starts_and_records_convergence(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    assert hub.calls == ["build", "replace"]
    state = reconciler.store.state.read()
    assert state.converged["image"] == hub.container.image_hash
    assert state.last_good == state.active
    assert reconciler.status.get("phase").startswith("serving 3 users")
    await reconciler.run_pass(("timer",))
    assert hub.calls == ["build", "replace"], "a converged world needs no action"


async def test_users_edit_syncs_live_without_build_or_restart(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    users = paths.local_custom / "users.csv"
    users.write_text(users.read_text() + "zoe,longpassword,\n")
    await reconciler.run_pass(("local: edit",))
    assert hub.calls == ["build", "replace", "sync_users"]


async def test_failed_build_is_recorded_old_hub_keeps_serving_and_no_retry(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    serving = hub.container
    (paths.local_custom / "apt.txt").write_text("nosuchpkg\n")
    desired_image = None

    original = hub.build_image

    async def failing(desired, progress):
        nonlocal desired_image
        desired_image = desired.hashes.image
        hub.fail_build_for.add(desired.hashes.image)
        await original(desired, progress)

    hub.build_image = failing
    await reconciler.run_pass(("local: edit",))
    assert hub.container == serving
    assert desired_image in reconciler.store.state.read().failed_builds
    assert "failed" in reconciler.status.get("last_error")
    calls = list(hub.calls)
    await reconciler.run_pass(("timer",))
    assert hub.calls == calls, "a failed build is not retried until the inputs change"


async def test_transient_error_backs_off_and_a_new_event_cuts_it_short(setup):
    paths, hub, reconciler = setup
    reconciler.backoff.initial = 30  # long enough that only a wake-up can end it within the test
    hub.unreachable = 1
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, reconciler.wake, "network: back")
    started = loop.time()
    await reconciler.run_pass(("startup",))
    assert loop.time() - started < 5
    assert "docker unreachable" in reconciler.status.get("last_error")
    assert reconciler.triggers.pending
    await reconciler.run_pass(reconciler.triggers.drain())
    assert hub.calls == ["build", "replace"]
    assert reconciler.status.get("last_error") is None


async def test_invalid_local_edit_keeps_the_active_config(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    active = reconciler.store.state.read().active
    (paths.local_custom / "users.csv").write_text("name,password,admin\n")
    await reconciler.run_pass(("local: edit",))
    assert reconciler.store.state.read().active == active
    assert hub.calls == ["build", "replace"]
    assert reconciler.status.get("problems")


class FakeNetwork:
    """NetworkManager as the reconciler sees it: a serve connection that is up or not."""

    def __init__(self, state="inactive", unreachable=False, activation_error=None):
        self.state, self.unreachable, self.activation_error = state, unreachable, activation_error
        self.activations = 0

    async def observe(self, spec):
        from conjuringd.reconcile.model import NetworkObserved

        if self.unreachable:
            raise TransientError("NetworkManager is not running")
        return NetworkObserved(spec.serve, self.state, ("10.42.0.1/24",) if self.state == "activated" else ())

    async def activate_serve(self, spec):
        self.activations += 1
        if self.activation_error:
            raise TransientError(self.activation_error)
        self.state = "activated"


def with_network(setup, network):
    paths, hub, reconciler = setup
    reconciler.adapters.network = network
    return paths, hub, reconciler


async def test_serve_network_is_activated_and_its_address_makes_the_url(setup):
    network = FakeNetwork()
    paths, hub, reconciler = with_network(setup, network)
    await reconciler.run_pass(("startup",))
    assert network.activations == 1
    assert reconciler.status.get("hub_urls")[0] == "http://10.42.0.1:8989"
    assert reconciler.status.get("phase") == "serving 3 users at http://10.42.0.1:8989 on Hotspot"


async def test_networkmanager_away_does_not_hold_up_the_hub_and_is_retried(setup):
    network = FakeNetwork(unreachable=True)
    paths, hub, reconciler = with_network(setup, network)
    reconciler._network_backoff.initial = 0.05
    await reconciler.run_pass(("startup",))
    assert hub.calls == ["build", "replace"]
    assert "not running" in reconciler.status.get("network_error")
    assert await reconciler.triggers.wait(timeout=2), "a retry must be scheduled"
    assert reconciler.triggers.drain() == ("retry: network",)
    network.unreachable = False
    await reconciler.run_pass(("retry: network",))
    assert network.activations == 1
    assert reconciler.status.get("network_error") is None


async def test_activation_failure_is_reported_and_the_hub_still_converges(setup):
    network = FakeNetwork(activation_error="no suitable device found")
    paths, hub, reconciler = with_network(setup, network)
    await reconciler.run_pass(("startup",))
    assert network.activations == 1, "activation is tried once per pass, not in a loop"
    assert hub.calls == ["build", "replace"]
    assert "no suitable device" in reconciler.status.get("network_error")
    reconciler._network_retry.cancel()


async def test_after_a_build_only_images_of_kept_snapshots_survive(setup):
    paths, hub, reconciler = setup
    kept = []

    async def prune(keep):
        kept.append(keep)

    hub.prune_images = prune
    await reconciler.run_pass(("startup",))
    first_image = hub.container.image_hash
    (paths.local_custom / "apt.txt").write_text("curl\n")
    await reconciler.run_pass(("local: edit",))
    assert len(kept) == 2
    assert {first_image, hub.container.image_hash} <= kept[-1], "the previous config's image stays for a quick switch back"
    users = paths.local_custom / "users.csv"
    users.write_text(users.read_text() + "zoe,longpassword,\n")
    await reconciler.run_pass(("local: edit",))
    assert len(kept) == 2, "no build, no pruning"


async def test_outdated_hotspot_is_reactivated_and_a_network_config_error_waits_for_input(setup):
    from conjuringd.config.problems import ConfigError

    network = FakeNetwork(state="outdated")
    paths, hub, reconciler = with_network(setup, network)
    await reconciler.run_pass(("startup",))
    assert network.activations == 1 and network.state == "activated"

    class Refusing(FakeNetwork):
        async def activate_serve(self, spec):
            self.activations += 1
            raise ConfigError((), "hotspot channel 177 is not valid in band a")

    refusing = Refusing(state="absent")
    reconciler.adapters.network = refusing
    await reconciler.run_pass(("local: edit",))
    assert refusing.activations == 1
    assert "channel 177" in reconciler.status.get("network_error")
    assert reconciler._network_retry is None, "a configuration error waits for new input, no retry timer"
    assert reconciler.status.get("last_error") is None, "the hub itself is fine"


class Recorder:
    def __init__(self):
        self.sent: list[str] = []

    def notify(self, state):
        self.sent.append(state)


async def test_a_broken_machine_file_keeps_the_hub_and_says_so(setup):
    paths, hub, reconciler = setup
    reconciler.status.notifier = recorder = Recorder()
    paths.machine_toml.write_text("[hub]\nidle_timeout = 120\n")
    await reconciler.run_pass(("startup",))
    serving = hub.container
    assert reconciler.desired().settings.hub.idle_timeout == 120
    paths.machine_toml.write_text('[hub]\nidle_timeout = 60\nmem_limit = "1 GB"\n')
    await reconciler.run_pass(("reload: conjuring.toml",))
    assert hub.container == serving, "nothing rebuilt or restarted for a broken machine file"
    assert reconciler.desired().settings.hub.idle_timeout == 120, "the last good machine settings stay"
    assert reconciler.status.get("phase").startswith("serving 3 users")
    assert "running with the last good machine settings" in reconciler.status.get("machine_error")
    assert any('"1 GB" is not a size' in p for p in reconciler.status.get("machine_problems"))
    assert any(s.startswith("STATUS=serving 3 users") and "has 1 error(s)" in s for s in recorder.sent)
    paths.machine_toml.write_text("[hub]\nidle_timeout = 60\n")
    await reconciler.run_pass(("reload: conjuring.toml",))
    assert reconciler.desired().settings.hub.idle_timeout == 60
    assert reconciler.status.get("machine_error") is None and recorder.sent[-1] == "STATUS=" + reconciler.status.get("phase")


async def test_any_exception_in_a_build_is_a_failed_build_recorded_reported_and_not_retried(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    serving = hub.container
    (paths.local_custom / "apt.txt").write_text("cowsay\n")
    original = hub.build_image

    async def crashing(desired, progress):
        hub.calls.append("build")
        raise ValueError("name is too long ('certs/xxx...')")

    hub.build_image = crashing
    await reconciler.run_pass(("local: edit",))
    desired = reconciler.desired()
    failure = reconciler.store.state.read().failed_builds[desired.hashes.image]
    assert "ValueError: name is too long" in failure["tail"][0]
    assert hub.container == serving, "the previous hub keeps serving"
    assert "failed" in reconciler.status.get("last_error")
    assert any("image build FAILED" in change for change in reconciler.status.get("changes"))
    assert not reconciler.status.get("phase").startswith("unexpected error"), "a failed build, not a loop error"
    builds = hub.calls.count("build")
    await reconciler.run_pass(("timer",))
    await reconciler.run_pass(("timer",))
    assert hub.calls.count("build") == builds, "not retried until the inputs change"
    hub.build_image = original
    (paths.local_custom / "apt.txt").write_text("cowsay\nsl\n")
    await reconciler.run_pass(("local: edit",))
    assert hub.calls.count("build") == builds + 1 and hub.container.image_hash == reconciler.desired().hashes.image


async def test_a_transient_error_in_a_build_is_retried_not_recorded(setup):
    paths, hub, reconciler = setup

    async def away(desired, progress):
        raise TransientError("docker unreachable")

    hub.build_image = away
    await reconciler.run_pass(("startup",))
    assert reconciler.store.state.read().failed_builds == {}
    assert "retry" in reconciler.status.get("phase")


async def test_a_container_never_health_checked_is_checked_and_a_failed_check_is_recorded(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    good = hub.container
    h = reconciler.desired().hashes
    hub.container = ContainerState("c-new", h.image, h.restart, True, checked=False)  # left by a SIGKILL
    checked = []

    async def check_container(desired, container_id, progress):
        checked.append(container_id)
        hub.container = good  # the adapter rolled back to the previous hub
        raise HubUnhealthy(f"{h.image}:{h.restart}", "hub container exited (restarts: 0)", ("boom",))

    hub.check_container = check_container
    await reconciler.run_pass(("startup",))
    assert checked == ["c-new"]
    assert f"{h.image}:{h.restart}" in reconciler.store.state.read().failed_builds
    assert "replace" not in hub.calls[2:], "a hub that could not start is not retried until the inputs change"
    assert reconciler.status.get("phase").startswith("serving the previous hub")
