"""Password guessing: after too many failed passwords for one user from one address, further
attempts are refused at once for a while, without spending a password hash on them.

Keyed by (user, address): a stranger failing from elsewhere cannot lock a participant out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

Key = tuple[str, str]  # (user, peer address)
PRUNE_ABOVE = 10_000  # keys kept before the expired ones are looked for (random user names)


class LoginThrottle:
    def __init__(
        self, failures: int, window_s: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures, self.window_s, self.now = failures, window_s, now
        self._failed: dict[Key, deque[float]] = {}

    def blocked(self, key: Key) -> bool:
        """True while `key` has had `failures` failures within the last `window_s`."""
        recent = self._recent(key)
        return recent is not None and len(recent) >= self.failures

    def record(self, key: Key, ok: bool) -> None:
        """A password checked for `key`: a success forgets its failures."""
        if ok:
            self._failed.pop(key, None)
            return
        recent = self._recent(key)
        if recent is None:
            if len(self._failed) >= PRUNE_ABOVE:
                for other in list(self._failed):
                    self._recent(other)
            recent = self._failed[key] = deque(maxlen=self.failures)
        recent.append(self.now())

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
            return None
        return recent
