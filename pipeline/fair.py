"""Jobs served fairly between participants (HUB.md, "Limits that protect the market"): one
queue per participant, taken in turn, so that a participant's burst of a thousand uploads
delays another's single upload by at most one job of each participant ahead of it."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Round-robin over participants; first in, first out within one participant."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, participant: str, item: T) -> None:
        self._queues.setdefault(participant, deque()).append(item)
        self._size += 1

    def pop(self) -> T | None:
        """The next participant's oldest item; that participant goes to the back of the turn."""
        if not self._queues:
            return None
        participant, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._queues.move_to_end(participant)
        else:
            del self._queues[participant]
        return item
