"""Password guessing is paused per (user, address), on a clock the test moves."""

from __future__ import annotations

import pytest

from bdi import throttle
from bdi.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_blocked_after_the_failures_until_the_first_leaves_the_window() -> None:
    clock = Clock()
    guard = LoginThrottle(3, 60.0, clock)
    key = ("COU010234", "10.0.0.1")
    for _ in range(2):
        guard.record(key, ok=False)
        clock.t += 10
    assert not guard.blocked(key)
    guard.record(key, ok=False)
    assert guard.blocked(key)
    assert not guard.blocked(("COU010234", "10.0.0.2"))  # another address
    assert not guard.blocked(("CIE000311", "10.0.0.1"))  # another user
    clock.t += 40.0  # the first failure is now 60 s old
    assert not guard.blocked(key)


def test_a_success_forgets_the_failures() -> None:
    clock = Clock()
    guard = LoginThrottle(2, 60.0, clock)
    key = ("COU010234", "10.0.0.1")
    guard.record(key, ok=False)
    guard.record(key, ok=True)
    guard.record(key, ok=False)
    assert not guard.blocked(key)


def test_expired_keys_are_pruned_when_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "PRUNE_ABOVE", 10)
    clock = Clock()
    guard = LoginThrottle(5, 60.0, clock)
    for n in range(10):
        guard.record((f"X{n}", "a"), ok=False)
    clock.t += 61
    guard.record(("Y", "a"), ok=False)
    assert len(guard) == 1
