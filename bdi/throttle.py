"""Password guessing: after too many failed passwords for one user from one address, further
attempts are refused at once for a while, without spending a password hash on them.

Keyed by (user, address): a stranger failing from elsewhere cannot lock a participant out.
With several nodes on one database (`bdi.shared`) the failures on the other live nodes count
too (as last read, about two seconds old at most): N nodes do not give a guesser N times the
tries. A success forgets this node's failures only: the others' fall with their window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from bdi.shared import Sharing, Tally

Key = tuple[str, str]  # (user, peer address)
PRUNE_ABOVE = 10_000  # keys kept before the expired ones are looked for (random user names)
FAILURES = "failures"  # the kind of the shared counts: a (user, address)'s failed passwords


class LoginThrottle:
    def __init__(
        self,
        failures: int,
        window_s: float,
        now: Callable[[], float] = time.monotonic,
        sharing: Sharing | None = None,
    ) -> None:
        self.failures, self.window_s, self.now = failures, window_s, now
        self._failed: dict[Key, deque[float]] = {}
        self.shared: Tally | None = None  # the other nodes' failures (None: one node)
        if sharing is not None:
            self.shared = sharing.tally(FAILURES, now, self._recount)

    def blocked(self, key: Key) -> bool:
        """True while `key` has had `failures` failures within the last `window_s`."""
        recent = self._recent(key)
        here = len(recent) if recent is not None else 0
        if self.shared is not None:
            here += self.shared.other(_shared_key(key))
        return here >= self.failures

    def record(self, key: Key, ok: bool) -> None:
        """A password checked for `key`: a success forgets its failures."""
        if ok:
            if self._failed.pop(key, None) is not None and self.shared is not None:
                self.shared.set(_shared_key(key), 0)
            return
        recent = self._recent(key)
        if recent is None:
            if len(self._failed) >= PRUNE_ABOVE:
                for other in list(self._failed):
                    self._recent(other)
            recent = self._failed[key] = deque(maxlen=self.failures)
        recent.append(self.now())
        if self.shared is not None:
            self.shared.set(_shared_key(key), len(recent), recent[0] + self.window_s)

    def __len__(self) -> int:
        return len(self._failed)

    def _recent(self, key: Key) -> deque[float] | None:
        """The key's failures within the window (older ones dropped, and the key with them)."""
        recent = self._failed.get(key)
        if recent is None:
            return None
        horizon = self.now() - self.window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            del self._failed[key]
            if self.shared is not None:
                self.shared.set(_shared_key(key), 0)
            return None
        return recent

    def _recount(self, shared_key: str) -> tuple[int, float | None]:
        """A key's failures here now, and when they fall next (for the shared row)."""
        user, _, address = shared_key.rpartition(" ")
        recent = self._recent((user, address))
        if recent is None:
            return 0, None
        return len(recent), recent[0] + self.window_s


def _shared_key(key: Key) -> str:
    """The user and the address in one string (an address holds no space)."""
    user, address = key
    return f"{user} {address}"
