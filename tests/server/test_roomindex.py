"""RoomIndex: the sorted set behind `rooms` pages (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gchat.server.roomindex import RoomIndex


def test_pages_follow_code_point_order_and_say_when_more_follow():
    index = RoomIndex(["b", "#a", "a", "B"])
    index.add("a")  # already there
    index.add("c")
    index.discard("B")
    index.discard("nothing")
    assert len(index) == 4 and "a" in index and "B" not in index and 5 not in index
    assert index.page(None, 2) == (["#a", "a"], True)
    assert index.page("a", 2) == (["b", "c"], False)
    assert index.page("aa", 10) == (["b", "c"], False)  # `after` need not be a room
    assert index.page("c", 10) == ([], False)


@given(st.lists(st.text(max_size=4)), st.lists(st.text(max_size=4)), st.integers(1, 5))
def test_paging_lists_every_name_once_in_order(added, removed, limit):
    index = RoomIndex()
    for name in added:
        index.add(name)
    for name in removed:
        index.discard(name)
    expected = sorted(set(added) - set(removed))
    listed, after, more = [], None, True
    while more:
        names, more = index.page(after, limit)
        listed += names
        after = names[-1] if names else after
    assert listed == expected
