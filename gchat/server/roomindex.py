"""RoomIndex: the names of the rooms that exist, in code point order, for `rooms` pages.

Strategy: one sorted list kept up to date as rooms come and go (a bisect and a list
insert or delete, microseconds at a hundred thousand rooms), so a page of the `rooms`
reply is a bisect and a slice: its cost follows the page, not every room there is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

__all__ = ["RoomIndex"]


class RoomIndex:
    """A sorted set of room names."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names = sorted(set(names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        i = bisect_left(self._names, name)
        return i < len(self._names) and self._names[i] == name

    def add(self, name: str) -> None:
        """Add `name` (a no-op if it is there)."""
        i = bisect_left(self._names, name)
        if i == len(self._names) or self._names[i] != name:
            self._names.insert(i, name)

    def discard(self, name: str) -> None:
        """Remove `name` (a no-op if it is not there)."""
        i = bisect_left(self._names, name)
        if i < len(self._names) and self._names[i] == name:
            del self._names[i]

    def page(self, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` names greater than `after` (from the first if None), and
        whether more follow."""
        start = 0 if after is None else bisect_right(self._names, after)
        names = self._names[start:start + limit]
        return names, start + limit < len(self._names)
