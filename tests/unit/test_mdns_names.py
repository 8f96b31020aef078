"""The mDNS name: [network] name checks, what plan() publishes, the status words, avahi's calls. Pure."""

import pytest

from conjuringd.adapters.avahi_records import PUBLISH_NO_REVERSE, entry_calls, group_state
from conjuringd.config.allow import machine_only
from conjuringd.config.model import Settings
from conjuringd.config.settings import parse_settings
from conjuringd.reconcile.model import (
    ActivateNetwork, BuildImage, NameRecord, NamesObserved, NetworkObserved, Observed, PublishName, WithdrawName,
)
from conjuringd.reconcile.names import MAX_ATTEMPTS, host_addresses, label_for, name_actions, name_status, publishable
from conjuringd.reconcile.plan import plan
from tests.unit.test_plan import DESIRED, observed

BOX = ("10.42.0.1",)
RUNNING = NamesObserved("running", addresses=BOX)


def record(label="conjuring", attempt=1, addresses=BOX, port=8989, base="conjuring"):
    return NameRecord(base, label, addresses, port, attempt)


@pytest.mark.parametrize("name", ["conjuring", "Room-4", "a", "x" * 63, "4b", "lab-2-east"])
def test_valid_names_are_accepted(name):
    settings, problems = parse_settings(f'[network]\nname = "{name}"\n'.encode(), "conjuring.toml")
    assert problems == [] and settings.network.name == name


@pytest.mark.parametrize("name", ["", "-room", "room-", "x" * 64, "room.local", "room 4", "salle_4", "café"])
def test_invalid_names_are_refused_with_what_a_name_may_hold(name):
    settings, problems = parse_settings(f'[network]\nname = "{name}"\n'.encode(), "conjuring.toml")
    assert settings.network.name == "conjuring"  # the default stays
    assert len(problems) == 1 and problems[0].line == 2
    assert "letters (a-z), digits and hyphens" in str(problems[0])


def test_a_stick_may_set_the_name():
    assert machine_only(("network", "name")) == ""
    assert Settings().network.name == "conjuring"


def test_label_for_counts_up_and_stays_a_dns_label():
    assert [label_for("conjuring", n) for n in (1, 2, 3)] == ["conjuring", "conjuring-2", "conjuring-3"]
    long = "a" * 62 + "-b"
    assert label_for(long, 2) == "a" * 61 + "-2" and len(label_for(long, 2)) == 63
    assert label_for("a" * 60 + "-xyz", 10) == "a" * 60 + "-10"  # a hyphen left at the cut is dropped


def test_publishable_keeps_routable_ipv4_once_without_prefix():
    assert publishable(["10.42.0.1/24", "127.0.0.1", "169.254.3.4", "fe80::1", "2001:db8::1", "10.42.0.1",
                        "nonsense", "192.168.1.9"]) == ("10.42.0.1", "192.168.1.9")


def test_host_addresses_follow_the_serve_connection():
    def local():
        return ("192.168.1.5", "127.0.0.1")

    def never():
        raise AssertionError("the host's addresses are not asked while networking is managed")

    assert host_addresses(None, local) == ("192.168.1.5",)
    assert host_addresses(NetworkObserved("none", "unmanaged"), local) == ("192.168.1.5",)
    assert host_addresses(NetworkObserved("Hotspot", "activated", ("10.42.0.1/24",)), never) == BOX
    assert host_addresses(NetworkObserved("Hotspot", "activating", ("10.42.0.1/24",)), never) == ()


def test_nothing_published_yet_publishes_the_lower_cased_name():
    assert name_actions("Conjuring", 8989, RUNNING) == [PublishName(record())]


@pytest.mark.parametrize("avahi", ["absent", "no bus", "starting"])
def test_avahi_not_running_plans_nothing(avahi):
    assert name_actions("conjuring", 8989, NamesObserved(avahi, addresses=BOX)) == []
    assert name_actions("conjuring", 8989, None) == []


@pytest.mark.parametrize("group", ["registering", "established", "failure"])
def test_published_record_in_place_plans_nothing(group):
    assert name_actions("conjuring", 8989, NamesObserved("running", record(), group, addresses=BOX)) == []


def test_collision_takes_the_next_name_and_gives_up_after_the_last():
    names = NamesObserved("running", record(), "collision", addresses=BOX)
    [action] = name_actions("conjuring", 8989, names)
    assert action == PublishName(record("conjuring-2", 2)) and "conjuring.local is taken" in action.reason
    last = NamesObserved("running", record(f"conjuring-{MAX_ATTEMPTS}", MAX_ATTEMPTS), "collision", addresses=BOX)
    assert name_actions("conjuring", 8989, last) == []


def test_changed_addresses_or_port_republish_under_the_name_in_use():
    names = NamesObserved("running", record("conjuring-2", 2), "established", addresses=("10.0.0.7",))
    assert name_actions("conjuring", 8989, names) == [PublishName(record("conjuring-2", 2, ("10.0.0.7",)))]
    names = NamesObserved("running", record("conjuring-2", 2), "established", addresses=BOX)
    assert name_actions("conjuring", 9000, names) == [PublishName(record("conjuring-2", 2, port=9000))]


def test_renamed_starts_again_at_the_first_attempt():
    names = NamesObserved("running", record("conjuring-2", 2), "collision", addresses=BOX)
    assert name_actions("room-4", 8989, names) == [PublishName(record("room-4", base="room-4"))]


def test_no_address_withdraws_what_is_published():
    assert name_actions("conjuring", 8989, NamesObserved("running", record(), "established")) == [
        WithdrawName("conjuring.local")]
    assert name_actions("conjuring", 8989, NamesObserved("running")) == []


def test_plan_publishes_after_the_network_and_before_the_hub_in_a_round_of_its_own():
    names = Observed(**{**observed(images=frozenset()).__dict__, "names": RUNNING})
    assert [type(a) for a in plan(DESIRED, names)] == [PublishName]  # a round of its own
    published = Observed(**{**names.__dict__, "names": NamesObserved("running", record(), "established",
                                                                     addresses=BOX)})
    assert [type(a) for a in plan(DESIRED, published)] == [BuildImage]
    down = Observed(**{**names.__dict__, "network": NetworkObserved("Hotspot", "inactive")})
    assert [type(a) for a in plan(DESIRED, down)] == [ActivateNetwork, BuildImage]  # the name waits for the address


URLS = ("http://10.42.0.1:8989",)


def test_status_names_the_box_only_once_established():
    established = name_status("conjuring", NamesObserved("running", record(), "established", addresses=BOX), URLS)
    assert established == {"mdns_name": "conjuring.local", "mdns_state": "established", "mdns_error": None}
    registering = name_status("conjuring", NamesObserved("running", record(), "registering", addresses=BOX), URLS)
    assert registering["mdns_name"] == "" and registering["mdns_state"] == "registering"


def test_status_explains_absence_with_the_address_students_can_use():
    status = name_status("Room-4", NamesObserved("absent", addresses=BOX), URLS)
    assert status["mdns_name"] == "" and status["mdns_state"] == "avahi absent"
    assert status["mdns_error"] == ("avahi-daemon is not running: install (or start) avahi-daemon to publish "
                                    "room-4.local; students can use http://10.42.0.1:8989")
    nobus = name_status("conjuring", NamesObserved("no bus", detail="unix:path=/x: refused"), URLS)
    assert "system D-Bus is unreachable (unix:path=/x: refused)" in nobus["mdns_error"]


def test_status_after_a_collision_says_which_name_the_box_took():
    status = name_status("conjuring", NamesObserved("running", record("conjuring-2", 2), "established"), URLS)
    assert status["mdns_name"] == "conjuring-2.local"
    assert "conjuring.local is taken" in status["mdns_error"] and "conjuring-2.local" in status["mdns_error"]
    failed = name_status("conjuring", NamesObserved("running", record(), "failure", "Bad state"), URLS)
    assert failed["mdns_state"] == "failure" and "Bad state" in failed["mdns_error"]
    assert name_status("conjuring", None, URLS)["mdns_state"] == "not managed"


def test_entry_calls_publish_each_address_without_reverse_and_the_hub_service():
    calls = entry_calls(record(addresses=("10.42.0.1", "192.168.1.9")))
    assert calls[:2] == [("AddAddress", "iiuss", [-1, -1, PUBLISH_NO_REVERSE, "conjuring.local", "10.42.0.1"]),
                         ("AddAddress", "iiuss", [-1, -1, PUBLISH_NO_REVERSE, "conjuring.local", "192.168.1.9"])]
    member, signature, body = calls[2]
    assert (member, signature) == ("AddService", "iiussssqaay")
    assert body[3:8] == ["JupyterHub on conjuring", "_http._tcp", "", "conjuring.local", 8989]
    assert group_state(2) == "established" and group_state(9) == "state 9"
