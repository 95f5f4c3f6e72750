"""RoomIndex: the names of the rooms that exist, in code point order, for `rooms` pages.

Strategy: one sorted list kept up to date as rooms come and go (a bisect and a list
insert or delete, microseconds at a hundred thousand rooms), so a page of the `rooms`
reply is a bisect and a slice: its cost follows the page, not every room there is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

__all__ = ["RoomIndex"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(name: str) -> str:
    return name.translate(_ASCII_LOWER)


class RoomIndex:
    """A sorted set of room names."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names = sorted(set(names))
        # ASCII-folded name -> the names that fold to it, for IRC (CASEMAPPING=ascii)
        self._folded: dict[str, set[str]] = {}
        for name in self._names:
            self._folded.setdefault(_fold(name), set()).add(name)

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
            self._folded.setdefault(_fold(name), set()).add(name)

    def discard(self, name: str) -> None:
        """Remove `name` (a no-op if it is not there)."""
        i = bisect_left(self._names, name)
        if i < len(self._names) and self._names[i] == name:
            del self._names[i]
            same = self._folded[_fold(name)]
            same.discard(name)
            if not same:
                del self._folded[_fold(name)]

    def find_folded(self, name: str) -> str | None:
        """The room whose name is `name` under ASCII case folding: `name` itself if it
        exists, else the first such name in code point order; None if there is none."""
        same = self._folded.get(_fold(name))
        if not same:
            return None
        return name if name in same else min(same)

    def page(self, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` names greater than `after` (from the first if None), and
        whether more follow."""
        start = 0 if after is None else bisect_right(self._names, after)
        names = self._names[start:start + limit]
        return names, start + limit < len(self._names)
