"""The token bucket, pure (time passed in), and on a live server (PROTOCOL.md 2)."""

from __future__ import annotations

from gchat.server.ratelimit import TokenBucket


def test_bucket_starts_full_and_refills_at_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.4)  # 0.8 token
    assert bucket.take(100.5)  # 1.0 token
    assert not bucket.take(100.5)
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_has_token_tells_what_take_would_do_and_takes_nothing():
    bucket = TokenBucket(rate=2.0, burst=1, now=100.0)
    assert bucket.has_token(100.0) and bucket.has_token(100.0)
    assert bucket.take(100.0)
    assert not bucket.has_token(100.4) and not bucket.take(100.4)
    assert bucket.has_token(100.9) and bucket.take(100.9)


LIMITED = "too many requests: slow down"


def limited(request_id):
    return {"op": "error", "id": request_id, "code": "rate_limited", "message": LIMITED}


def test_rate_limited_requests_do_nothing_and_bad_frames_take_tokens(make_server, connect):
    server = make_server(rate=0.001, burst=3)
    client = connect(target=server)
    client.send_raw(b'not json\n{"op":"pong"}\n   \r\n{"op":"hello","nick":"bob","id":1}\n')
    assert client.recv()["code"] == "bad_frame"
    assert client.recv()["op"] == "ok"  # pong and the blank line took nothing
    client.send({"op": "join", "room": "a", "id": 2}, {"op": "join", "room": "b", "id": 3})
    assert client.recv()["op"] == "ok"
    assert client.recv() == limited(3)  # the bucket is empty
    assert server.rooms.get("b") is None  # and the join was not carried out
    client.send_raw(b"{bad\n")
    assert client.recv()["code"] == "bad_frame"  # a bad frame still gets bad_frame
    # rate_limited precedes unknown_op; an invalid id is echoed as null;
    # a rate-limited quit leaves the connection open
    client.send({"op": "quit", "id": 4}, {"op": "dance", "id": 1.5}, {"op": "ping", "id": 5})
    assert [client.recv() for _ in range(3)] == [limited(4), limited(None), limited(5)]
