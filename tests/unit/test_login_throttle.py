"""The login throttle: every attempt waits for its turn before its password is compared."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "login_throttle", Path(__file__).resolve().parents[2] / "conjuringd/hub/runtime/login_throttle.py")
login_throttle = importlib.util.module_from_spec(SPEC)
sys.modules["login_throttle"] = login_throttle  # dataclasses look their module up there
SPEC.loader.exec_module(login_throttle)
Busy, Limits, LoginThrottle = login_throttle.Busy, login_throttle.Limits, login_throttle.LoginThrottle


def fail_in_turn(throttle, name, now):
    """One attempt that fails as soon as its turn comes; returns when it was checked."""
    at = throttle.turn(name, now)
    throttle.failed(name, at)
    return at


def test_wrong_passwords_for_one_name_wait_longer_and_longer():
    throttle, now, checked = LoginThrottle(), 0.0, []
    for _ in range(6):
        now = fail_in_turn(throttle, "ben", now)
        checked.append(now)
    gaps = [b - a for a, b in zip(checked, checked[1:])]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_existing_and_unknown_names_are_treated_alike():
    # the throttle never learns whether a name exists: the same history gives the same turns
    a, b = LoginThrottle(), LoginThrottle()
    assert [fail_in_turn(a, "ben", t) for t in (0, 0.1, 0.2)] == [fail_in_turn(b, "nobody-xyz", t) for t in (0, 0.1, 0.2)]


def test_parallel_attempts_for_one_name_wait_in_line():
    throttle = LoginThrottle()
    turns = [throttle.turn("ben", 0.0) for _ in range(4)]  # four connections at once
    assert turns == [0.0, 0.5, 1.5, 3.5]  # each as if those before it failed


def test_parallel_attempts_over_many_names_are_held_to_the_hub_rate():
    limits = Limits(rate=2.0, burst=10, max_wait=1e9)
    throttle = LoginThrottle(limits)
    turns = [throttle.turn(f"name{i}", 0.0) for i in range(50)]
    assert turns[:10] == [0.0] * 10  # the burst: a class logging in at once
    assert turns[10:] == pytest.approx([0.5 * (i + 1) for i in range(40)])  # then two a second


def test_a_successful_login_gives_its_turn_back():
    throttle = LoginThrottle(Limits(rate=1.0, burst=3))
    for i in range(100):  # a whole class logs in, one after another, all at t=0: nobody waits
        name = f"student{i}"
        assert throttle.turn(name, 0.0) == 0.0
        throttle.succeeded(name, 0.0)


def test_an_attempt_too_far_back_in_line_is_refused_unchecked():
    throttle = LoginThrottle(Limits(rate=1.0, burst=1, max_wait=5.0))
    turns = [throttle.turn(f"n{i}", 0.0) for i in range(6)]
    assert turns == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(Busy):
        throttle.turn("n6", 0.0)
    assert throttle.turn("n6", 3.0) == 6.0  # later, there is room again


def test_success_resets_a_name_and_old_failures_are_forgotten():
    limits = Limits(forget_after=100.0)
    throttle = LoginThrottle(limits)
    t = fail_in_turn(throttle, "ben", 0.0)
    t = fail_in_turn(throttle, "ben", t)
    t = fail_in_turn(throttle, "ben", t)
    assert throttle.turn("ben", t) == t + 2.0
    throttle.succeeded("ben", t + 2.0)
    assert throttle.turn("ben", t + 2.0) == t + 2.0  # his own login cleared it
    throttle.failed("ben", t + 2.0)
    assert throttle.turn("caz", 0.0) <= 0.0 + 1.0
    throttle.failed("caz", 0.0)
    assert throttle.turn("caz", 1000.0) == 1000.0  # forgotten after 100 s without failures


def test_the_table_of_names_is_bounded():
    throttle = LoginThrottle(Limits(max_names=100, rate=1e6, burst=10**6))
    for i in range(10_000):
        fail_in_turn(throttle, f"guess{i}", float(i))
    assert len(throttle._names) <= 100


def test_one_name_in_a_long_back_off_holds_up_nobody_else():
    throttle = LoginThrottle()
    t = 0.0
    for _ in range(8):
        t = fail_in_turn(throttle, "ben", t)
    assert throttle.turn("ben", t) == t + 30.0  # capped
    assert throttle.turn("caz", t) == t
