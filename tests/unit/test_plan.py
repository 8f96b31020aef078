"""plan(desired, observed): pure decisions, no Docker, no D-Bus."""

from conjuringd.config.model import CustomConfig, FileTree, Settings, User
from conjuringd.reconcile.model import (
    ActivateNetwork,
    BuildImage,
    CheckContainer,
    ConfigHashes,
    ContainerState,
    Desired,
    HubObserved,
    ImportStick,
    NetworkObserved,
    Observed,
    ReplaceContainer,
    StartContainer,
    StickObserved,
    SyncFiles,
    SyncUsers,
    WriteStickReport,
)
from conjuringd.reconcile.plan import plan, replace_key

HASHES = ConfigHashes("cfg", "img", (("base", "b"), ("runtime", "img")), "rst", "usr", "fil")


def make_config() -> CustomConfig:
    return CustomConfig(
        root="/x", users=(User("ana", "pw", True, 2),), apt_packages=(), requirements=b"", environment=b"",
        kernels=(), base_dockerfile=b"", base_image="", certs=(), hub_config=b"", shared=FileTree(),
        home_default=FileTree(), settings=Settings(), toml=b"",
    )


DESIRED = Desired(HASHES, make_config(), "/snap")
SERVING = ContainerState("c1", "img", "rst", True, "usr", "fil")
ACTIVE_NET = NetworkObserved("Hotspot", "activated", ("10.42.0.1/24",))


def observed(container=SERVING, images=frozenset({"img"}), network=ACTIVE_NET, failed=frozenset(), sticks=()):
    return Observed(HubObserved(images, container), network, failed, sticks)


def test_converged_world_gives_empty_plan():
    assert plan(DESIRED, observed()) == []


def test_no_configuration_plans_nothing_for_the_hub():
    assert plan(None, observed(container=None, images=frozenset())) == []


def test_missing_image_is_built_first():
    actions = plan(DESIRED, observed(images=frozenset({"old"}), container=ContainerState("c", "old", "rst", True)))
    assert actions == [BuildImage("img")]
    assert "old" in actions[0].reason


def test_image_present_but_container_on_old_image_is_replaced():
    actions = plan(DESIRED, observed(images=frozenset({"img", "old"}), container=ContainerState("c", "old", "rst", True)))
    assert actions == [ReplaceContainer("img", "rst")]


def test_restart_hash_change_replaces_without_build():
    actions = plan(DESIRED, observed(container=ContainerState("c", "img", "old-rst", True, "usr", "fil")))
    assert actions == [ReplaceContainer("img", "rst")]
    assert "restart" in actions[0].reason


def test_missing_container_is_created():
    assert plan(DESIRED, observed(container=None)) == [ReplaceContainer("img", "rst")]


def test_stopped_container_is_started():
    stopped = ContainerState("c1", "img", "rst", False, "usr", "fil")
    assert plan(DESIRED, observed(container=stopped)) == [StartContainer("c1")]


def test_users_and_files_sync_live_without_restart():
    stale = ContainerState("c1", "img", "rst", True, "old-users", "old-files")
    assert plan(DESIRED, observed(container=stale)) == [SyncUsers("usr"), SyncFiles("fil")]


def test_failed_build_is_not_retried_and_old_hub_keeps_live_syncs():
    old = ContainerState("c", "old", "rst", True, "old-users", "fil")
    actions = plan(DESIRED, observed(images=frozenset({"old"}), container=old, failed=frozenset({"img"})))
    assert actions == [SyncUsers("usr")]


def test_failed_build_without_any_hub_plans_nothing():
    assert plan(DESIRED, observed(images=frozenset(), container=None, failed=frozenset({"img"}))) == []


def test_failed_replacement_is_not_retried():
    old = ContainerState("c", "old", "rst", True, "usr", "fil")
    failed = frozenset({replace_key("img", "rst")})
    assert plan(DESIRED, observed(images=frozenset({"img", "old"}), container=old, failed=failed)) == []


def test_inactive_serve_network_is_activated_before_hub_work():
    actions = plan(DESIRED, observed(network=NetworkObserved("Hotspot", "inactive"), container=None))
    assert actions == [ActivateNetwork("Hotspot"), ReplaceContainer("img", "rst")]


def test_unmanaged_network_is_left_alone():
    assert plan(DESIRED, observed(network=NetworkObserved("none", "unmanaged"))) == []


def test_stick_imports_come_before_everything_else():
    sticks = (StickObserved("/dev/sdb1", "k1", "CONJ"),)
    actions = plan(DESIRED, observed(container=None, sticks=sticks))
    assert actions == [ImportStick("/dev/sdb1", "k1")]


def test_stick_report_waits_until_the_hub_converged():
    sticks = (StickObserved("/dev/sdb1", "k1", pending="report"),)
    assert plan(DESIRED, observed(container=None, sticks=sticks)) == [ReplaceContainer("img", "rst")]
    assert plan(DESIRED, observed(sticks=sticks)) == [WriteStickReport("/dev/sdb1", "k1")]


def test_hub_disabled_plans_only_network_and_sticks():
    desired = Desired(HASHES, make_config(), "/snap", hub_enabled=False)
    assert plan(desired, Observed(None, ACTIVE_NET)) == []


# --- only our own container is ours; a container never health-checked is checked first ---------------------


FOREIGN = ContainerState("c9", "img", "rst", True, "usr", "fil", ours=False)  # our very labels, not our owner


def test_foreign_container_is_replaced_even_when_its_labels_match():
    actions = plan(DESIRED, observed(container=FOREIGN))
    assert actions == [ReplaceContainer("img", "rst")]
    assert "never adopted" in actions[0].reason


def test_foreign_stopped_container_is_never_started_or_synced():
    stopped = ContainerState("c9", "img", "rst", False, "", "", ours=False)
    assert plan(DESIRED, observed(container=stopped)) == [ReplaceContainer("img", "rst")]


def test_foreign_container_waits_for_our_image_and_is_left_alone_when_our_hub_failed():
    assert plan(DESIRED, observed(container=FOREIGN, images=frozenset())) == [BuildImage("img")]
    assert plan(DESIRED, observed(container=FOREIGN, images=frozenset(), failed=frozenset({"img"}))) == []
    failed = frozenset({replace_key("img", "rst")})
    assert plan(DESIRED, observed(container=FOREIGN, failed=failed)) == [], "no StartContainer/SyncUsers on it"


def test_unchecked_container_is_health_checked_before_anything_else():
    unchecked = ContainerState("c2", "img", "rst", False, "", "", checked=False)
    assert plan(DESIRED, observed(container=unchecked)) == [CheckContainer("c2")]
    outdated = ContainerState("c2", "old", "old", True, "", "", checked=False)
    assert plan(DESIRED, observed(container=outdated, images=frozenset())) == [CheckContainer("c2")]


def test_a_foreign_container_is_replaced_not_checked():
    foreign_unchecked = ContainerState("c9", "img", "rst", True, ours=False, checked=False)
    assert plan(DESIRED, observed(container=foreign_unchecked)) == [ReplaceContainer("img", "rst")]


def test_checked_container_after_a_failed_check_needs_nothing_more():
    rolled_back = ContainerState("c1", "old", "old", True, "usr", "fil")
    failed = frozenset({replace_key("img", "rst")})
    assert plan(DESIRED, observed(container=rolled_back, failed=failed)) == []
    assert plan(DESIRED, observed(container=None, failed=failed)) == [], "no hub could start and none came back"
