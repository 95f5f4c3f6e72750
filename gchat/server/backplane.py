"""RedisBackplane: the Redis server that the nodes of a gchat cluster share.

Strategy: Redis holds what is cluster-wide; each node holds its own connections.
Every change to shared state is one Lua script, which Redis runs atomically: it
updates the keys and publishes what it did, as records (records.py), on one channel
that every node subscribes to. Redis delivers a channel's messages to each subscriber
in the order they were published, so every node applies every room's events in one
order, the order the scripts ran in. A node applies its own records from the channel
too, and answers its own clients from them (ClusterServer).

Keys (prefix `gchat:`):
    nodes                ZSET   node id -> deadline (ms, Redis clock); heartbeats move it
    node-ids             STRING counter that numbers nodes
    node:N:sessions      HASH   session id -> nick, the registered sessions of node N
    node:N:rooms         SET    "session room", the memberships of node N's sessions
    nick:LOWER           STRING "node session": who holds a nick (free once node is dead)
    room-names           ZSET   every room that exists (members or history), all scored 0,
                                so ZRANGEBYLEX pages them in code point order
    room-folds           ZSET   "LOWER ROOM" for each of them: the rooms an IRC channel
                                name folds to, in code point order (ZRANGEBYLEX)
    history-rooms        ZSET   room -> ms of its last say: the rooms that keep history
    room:R:members       HASH   session id -> nick
    room:R:seq           STRING the room's last seq
    room:R:log           STREAM history: entry id "SEQ-0", fields m (the msg) and t (tag)
    room:R:ops           SET    session ids of the room's operators (its creator first)
    room:R:voiced        SET    session ids of its voiced members (+v)
    room:R:open-topic    STRING present while the room is -t (any member sets the topic)
    room:R:moderated     STRING present while the room is +m (operators and voiced speak)
    room:R:topic         HASH   text, by, ts: the topic, kept while the room exists
    accounts             HASH   folded nick -> JSON [name, scrypt hash, created ms]
    log:KEY              ZSET   an event log (eventlog.py: dm:OWNER:PEER, room:ROOM), scored
                                by position, members JSON [pos, ts, msgid, event]
    dm-peers:OWNER       ZSET   peer -> ts of the last private message in dm:OWNER:PEER (at
                                most MAX_PEERS: the least recent log goes)

A node that stops heartbeating for `node_timeout` seconds is dead: the first node to
notice (each node looks once per heartbeat) removes its sessions, publishing a
`presence quit` in each of their rooms, and frees their nicks. Session ids are
`node * 10**9 + n`, so they are unique in the cluster.

The client is redis-py; its sockets cooperate with gevent because the server's entry
point monkey-patches. Commands are never retried (a say must not be published twice):
a failure raises BackplaneError and the request fails with `unavailable`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

import gevent
import redis
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import BackplaneError
from .accounts import Account
from .config import redact
from .eventlog import LOG_MAX, MAX_PEERS, LogEntry
from .events import RoomView, Topic

__all__ = ["SESSIONS_PER_NODE", "RedisBackplane"]

log = logging.getLogger(__name__)

SESSIONS_PER_NODE = 10**9
POOL_SIZE = 16  # connections to Redis per node, besides the subscriber's
CHANNEL = "gchat:events"
ACCOUNTS = "gchat:accounts"
_UPDATE_ACCOUNT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# KEYS: the log[, its owner's dm-peers]; ARGV: position, member, LOG_MAX[, peer, ts,
# MAX_PEERS, the owner's private log prefix]
_LOG_APPEND = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
if KEYS[2] then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
  if redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[6]) then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    redis.call('ZREM', KEYS[2], oldest)
    redis.call('UNLINK', ARGV[7] .. oldest)
  end
end
"""
# KEYS: accounts; ARGV: the nick key. Deletes the account and its private logs.
_DELETE_ACCOUNT = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local owner = ARGV[1] .. '~' .. string.match(value, '(%d+)%]$')
local peers = 'gchat:dm-peers:' .. owner
for _, peer in ipairs(redis.call('ZRANGE', peers, 0, -1)) do
  redis.call('UNLINK', 'gchat:log:dm:' .. owner .. ':' .. peer)
end
redis.call('UNLINK', peers)
return 1
"""
_LOG_SEEK = """
local n = redis.call('ZCARD', KEYS[1])
local low, high, ts, strict = 0, n, tonumber(ARGV[1]), ARGV[2] == '1'
while low < high do  -- a log's times grow with its positions: binary search
  local middle = math.floor((low + high) / 2)
  local at = tonumber(string.match(redis.call('ZRANGE', KEYS[1], middle, middle)[1], '^%[%d+,(%d+),'))
  if at > ts or (at == ts and not strict) then high = middle else low = middle + 1 end
end
if low == n then return false end
return redis.call('ZRANGE', KEYS[1], low, low, 'WITHSCORES')[2]
"""


def _log_member(entry: LogEntry) -> str:
    return json.dumps([entry.pos, entry.ts, entry.msgid, entry.event.decode()],
                      separators=(",", ":"), ensure_ascii=False)


def _log_entry(member: bytes) -> LogEntry:
    pos, ts, msgid, event = json.loads(member)
    return LogEntry(pos, ts, msgid, event.encode())


def _account_value(account: Account) -> str:
    return json.dumps([account.name, account.hash, account.created])


def _account(value: bytes) -> Account:
    name, hashed, created = json.loads(value)
    return Account(name, hashed, created)


_LUA_COMMON = r"""
local P = 'gchat:'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function presence(room, nick, event, old, extra)
  local f = '{"op":"presence","room":"' .. room .. '","nick":"' .. nick .. '","event":"' .. event .. '"'
  if old then f = f .. ',"old":"' .. old .. '"' end
  return f .. (extra or '') .. '}'
end
local function room_seq(room)
  return redis.call('GET', P .. 'room:' .. room .. ':seq') or '0'
end
local function presence_record(room, sid, tag, frame, why)
  if why and why ~= '' then tag = tag .. ' ' .. why end  -- an IRC user's reason, for IRC
  return 'P ' .. room .. ' ' .. room_seq(room) .. ' ' .. sid .. ' ' .. tag .. '\n' .. frame .. '\n'
end
local function add_room(room)  -- it exists; room-folds finds it by its ASCII-folded name
  redis.call('ZADD', P .. 'room-names', 0, room)
  redis.call('ZADD', P .. 'room-folds', 0, string.lower(room) .. ' ' .. room)
end
local function remove_room(room)
  redis.call('ZREM', P .. 'room-names', room)
  redis.call('ZREM', P .. 'room-folds', string.lower(room) .. ' ' .. room)
end
local function forget_if_unused(room)
  if redis.call('HLEN', P .. 'room:' .. room .. ':members') == 0
      and redis.call('EXISTS', P .. 'room:' .. room .. ':log') == 0 then
    remove_room(room)
    -- a topic and the room's event log (eventlog.py) go with it
    redis.call('DEL', P .. 'room:' .. room .. ':topic', P .. 'log:room:' .. room)
  end
end
local function find_member(room, nick)  -- the session id and nick of `nick` in the room
  local flat = redis.call('HGETALL', P .. 'room:' .. room .. ':members')
  local wanted = string.lower(nick)
  for i = 1, #flat, 2 do
    if string.lower(flat[i + 1]) == wanted then return flat[i], flat[i + 1] end
  end
  return nil, nil
end
local function may_run(sid, room)  -- -1: not a member, 0: not an operator, 1: an operator
  local base = P .. 'room:' .. room
  if redis.call('HEXISTS', base .. ':members', sid) == 0 then return -1 end
  return redis.call('SISMEMBER', base .. ':ops', sid)
end
local function view(room, reply)  -- ops..., '', voiced..., '', open-topic, moderated, topic text, by, ts
  local base = P .. 'room:' .. room
  for _, sid in ipairs(redis.call('SMEMBERS', base .. ':ops')) do reply[#reply + 1] = sid end
  reply[#reply + 1] = ''
  for _, sid in ipairs(redis.call('SMEMBERS', base .. ':voiced')) do reply[#reply + 1] = sid end
  reply[#reply + 1] = ''
  reply[#reply + 1] = redis.call('EXISTS', base .. ':open-topic')
  reply[#reply + 1] = redis.call('EXISTS', base .. ':moderated')
  local topic = redis.call('HMGET', base .. ':topic', 'text', 'by', 'ts')
  reply[#reply + 1] = topic[1] or ''
  reply[#reply + 1] = topic[2] or ''
  reply[#reply + 1] = topic[3] or '0'
end
local function alive(node, now)
  local deadline = redis.call('ZSCORE', P .. 'nodes', node)
  return deadline ~= false and deadline ~= nil and tonumber(deadline) >= now
end
local function nick_free(key, me, now)
  local holder = redis.call('GET', key)
  if not holder or holder == me then return true end
  return not alive(string.match(holder, '^(%S+) '), now)
end
local function leave(node, sid, room, event, records, extra, tag, why)
  local mkey = P .. 'room:' .. room .. ':members'
  local nick = redis.call('HGET', mkey, sid)
  redis.call('SREM', P .. 'node:' .. node .. ':rooms', sid .. ' ' .. room)
  if nick then
    redis.call('HDEL', mkey, sid)
    redis.call('SREM', P .. 'room:' .. room .. ':ops', sid)
    redis.call('SREM', P .. 'room:' .. room .. ':voiced', sid)
    if redis.call('HLEN', mkey) == 0 then  -- made again, it starts +t and not +m
      redis.call('DEL', P .. 'room:' .. room .. ':open-topic', P .. 'room:' .. room .. ':moderated')
    end
    records[#records + 1] = presence_record(room, sid, tag or '-',
                                            presence(room, nick, event, nil, extra), why)
  end
  forget_if_unused(room)
end
local function drop_node(node, records)
  local skey = P .. 'node:' .. node .. ':sessions'
  for _, m in ipairs(redis.call('SMEMBERS', P .. 'node:' .. node .. ':rooms')) do
    local sid, room = string.match(m, '^(%S+) (%S+)$')
    leave(node, sid, room, 'quit', records)
  end
  local flat = redis.call('HGETALL', skey)
  for i = 1, #flat, 2 do
    local key = P .. 'nick:' .. string.lower(flat[i + 1])
    if redis.call('GET', key) == node .. ' ' .. flat[i] then redis.call('DEL', key) end
  end
  redis.call('DEL', skey, P .. 'node:' .. node .. ':rooms')
  redis.call('ZREM', P .. 'nodes', node)
end
local function publish(records)
  if #records > 0 then redis.call('PUBLISH', P .. 'events', table.concat(records)) end
end
"""

_SCRIPTS = {
    # ARGV: timeout_ms -> the new node's id
    "new_node": r"""
if redis.call('TYPE', P .. 'rooms').ok == 'set' then  -- kept by gchat before 2026-12: convert
  local now = now_ms()
  for _, room in ipairs(redis.call('SMEMBERS', P .. 'rooms')) do
    add_room(room)
    if redis.call('EXISTS', P .. 'room:' .. room .. ':log') == 1 then
      redis.call('ZADD', P .. 'history-rooms', now, room)
    end
  end
  redis.call('DEL', P .. 'rooms')
end
if redis.call('EXISTS', P .. 'room-folds') == 0 then  -- kept by gchat before 2026-12-02
  for _, room in ipairs(redis.call('ZRANGE', P .. 'room-names', 0, -1)) do
    redis.call('ZADD', P .. 'room-folds', 0, string.lower(room) .. ' ' .. room)
  end
end
local node = redis.call('INCR', P .. 'node-ids')
redis.call('ZADD', P .. 'nodes', now_ms() + tonumber(ARGV[1]), node)
return node
""",
    # ARGV: node, timeout_ms -> 1 if the node was still known, 0 if it had been dropped
    "heartbeat": r"""
local known = redis.call('ZSCORE', P .. 'nodes', ARGV[1])
redis.call('ZADD', P .. 'nodes', now_ms() + tonumber(ARGV[2]), ARGV[1])
if known then return 1 else return 0 end
""",
    # -> how many dead nodes were dropped
    "reap": r"""
local dead = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', '(' .. now_ms())
local records = {}
for _, node in ipairs(dead) do drop_node(node, records) end
publish(records)
return #dead
""",
    # ARGV: node -> drop this node (graceful shutdown)
    "drop": r"""
local records = {}
drop_node(ARGV[1], records)
publish(records)
return 1
""",
    # ARGV: node, session, nick -> 1, or 0 if the nick is taken
    "claim": r"""
local me = ARGV[1] .. ' ' .. ARGV[2]
local key = P .. 'nick:' .. string.lower(ARGV[3])
if not nick_free(key, me, now_ms()) then return 0 end
redis.call('SET', key, me)
redis.call('HSET', P .. 'node:' .. ARGV[1] .. ':sessions', ARGV[2], ARGV[3])
return 1
""",
    # ARGV: node, session, nick, IRC quit reason, rooms... -> leave each room (presence
    # quit), free the nick
    "unregister": r"""
local node, sid = ARGV[1], ARGV[2]
local skey = P .. 'node:' .. node .. ':sessions'
local records = {}
for i = 5, #ARGV do leave(node, sid, ARGV[i], 'quit', records, nil, nil, ARGV[4]) end
-- The nick the node knew, and the one Redis holds: a rename may have run meanwhile.
for _, nick in ipairs({ARGV[3], redis.call('HGET', skey, sid) or ARGV[3]}) do
  local key = P .. 'nick:' .. string.lower(nick)
  if redis.call('GET', key) == node .. ' ' .. sid then redis.call('DEL', key) end
end
redis.call('HDEL', skey, sid)
publish(records)
return 1
""",
    # ARGV: node, session, old nick, new nick, rooms... -> 1, 0 if the new nick is
    # taken, -1 if the session is not registered (it ended: nothing may be claimed for it)
    "rename": r"""
local node, sid, old, new = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', P .. 'node:' .. node .. ':sessions', sid) == 0 then return -1 end
local me = node .. ' ' .. sid
local newkey, oldkey = P .. 'nick:' .. string.lower(new), P .. 'nick:' .. string.lower(old)
if newkey ~= oldkey then
  if not nick_free(newkey, me, now_ms()) then return 0 end
  if redis.call('GET', oldkey) == me then redis.call('DEL', oldkey) end
end
redis.call('SET', newkey, me)
redis.call('HSET', P .. 'node:' .. node .. ':sessions', sid, new)
local records = {}
for i = 5, #ARGV do
  local room = ARGV[i]
  local mkey = P .. 'room:' .. room .. ':members'
  if redis.call('HEXISTS', mkey, sid) == 1 then
    redis.call('HSET', mkey, sid, new)
    records[#records + 1] = presence_record(room, sid, '-', presence(room, new, 'rename', old))
  end
end
publish(records)
return 1
""",
    # ARGV: node, session, nick, room, tag, after (-1: none), max_recover, history_on_join,
    # rejoin (seq bound, -1: a new join), fold (1: the room an IRC channel name folds to)
    # -> {seq, (session, nick)..., '', history..., '', view..., recovered, room};
    # {-1} if the session is not registered (it ended: it must not become a member)
    "join": r"""
local node, sid, nick, room, tag = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', P .. 'node:' .. node .. ':sessions', sid) == 0 then return {-1} end
local after, max_recover, on_join = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local rejoin = tonumber(ARGV[9])
if ARGV[10] == '1' and not redis.call('ZSCORE', P .. 'room-names', room) then
  -- An IRC user's channel: the room whose name folds to it, if one exists (decided
  -- here, with the join, so two users joining #Dev and #dev at once get one room).
  local folded = string.lower(room)
  local found = redis.call('ZRANGEBYLEX', P .. 'room-folds', '[' .. folded .. ' ',
                           '[' .. folded .. '!', 'LIMIT', 0, 1)
  if #found > 0 then room = string.match(found[1], '^%S+ (%S+)$') end
end
local mkey, log = P .. 'room:' .. room .. ':members', P .. 'room:' .. room .. ':log'
local seq = tonumber(room_seq(room))
if rejoin >= 0 then
  seq = math.min(seq, rejoin)
else
  local had = redis.call('HLEN', mkey) > 0
  if not had then  -- who creates a room runs it
    redis.call('SADD', P .. 'room:' .. room .. ':ops', sid)
    redis.call('DEL', P .. 'room:' .. room .. ':open-topic', P .. 'room:' .. room .. ':moderated')
  end
  redis.call('HSET', mkey, sid, nick)
  redis.call('SADD', P .. 'node:' .. node .. ':rooms', sid .. ' ' .. room)
  add_room(room)
  publish({presence_record(room, sid, tag, presence(room, nick, 'join'))})
end
local history, recovered = nil, 0
if after >= 0 and after <= seq then
  if after == seq then
    history, recovered = {}, 1
  elseif seq - after <= max_recover then
    local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
    local first_seq = 0
    if #first > 0 then first_seq = tonumber(string.match(first[1][1], '^(%d+)')) end
    if first_seq <= after + 1 then
      history, recovered = redis.call('XRANGE', log, (after + 1) .. '-0', seq .. '-0'), 1
    end
  end
end
if history == nil then
  history = {}
  local newest = redis.call('XREVRANGE', log, seq .. '-0', '-', 'COUNT', on_join)
  for i = #newest, 1, -1 do history[#history + 1] = newest[i] end
end
local reply = {seq}
for _, member in ipairs(redis.call('HGETALL', mkey)) do reply[#reply + 1] = member end
reply[#reply + 1] = ''
for _, entry in ipairs(history) do reply[#reply + 1] = entry[2][2] end
reply[#reply + 1] = ''
view(room, reply)
reply[#reply + 1] = recovered
reply[#reply + 1] = room
return reply
""",
    # ARGV: room -> {(session, nick)..., '', ops..., '', voiced..., '', open-topic,
    # moderated, text, by, ts}
    "view": r"""
local reply = redis.call('HGETALL', P .. 'room:' .. ARGV[1] .. ':members')
reply[#reply + 1] = ''
view(ARGV[1], reply)
return reply
""",
    # ARGV: session, room, text ('' clears), by, ts, frame, tag -> 1 (published), 0 if
    # the room is +t and the session not an operator, -1 if it is not a member
    "topic": r"""
local sid, room = ARGV[1], ARGV[2]
local base = P .. 'room:' .. room
local may = may_run(sid, room)
if may < 0 or (may == 0 and redis.call('EXISTS', base .. ':open-topic') == 0) then return may end
if ARGV[3] == '' then
  redis.call('DEL', base .. ':topic')
else
  redis.call('HSET', base .. ':topic', 'text', ARGV[3], 'by', ARGV[4], 'ts', ARGV[5])
end
publish({'E ' .. room .. ' ' .. ARGV[7] .. '\n' .. ARGV[6] .. '\n'})
return 1
""",
    # ARGV: session, room, change (+o -o +v -v +t -t +m -m), nick ('' for t and m), from,
    # ts, tag -> 1
    # (published), 2 (it changed nothing), 0 not an operator, -1 not a member, -2 no
    # such nick in the room
    "mode": r"""
local sid, room, change = ARGV[1], ARGV[2], ARGV[3]
local base = P .. 'room:' .. room
local may = may_run(sid, room)
if may < 1 then return may end
local f = '{"op":"mode","room":"' .. room .. '","change":"' .. change .. '"'
local letter, on = string.sub(change, 2, 2), string.sub(change, 1, 1) == '+'
if letter == 'o' or letter == 'v' then
  local target, nick = find_member(room, ARGV[4])
  if not target then return -2 end
  local set = base .. (letter == 'o' and ':ops' or ':voiced')
  local changed
  if on then changed = redis.call('SADD', set, target)
  else changed = redis.call('SREM', set, target) end
  if changed == 0 then return 2 end
  f = f .. ',"nick":"' .. nick .. '"'
else  -- t: the key marks -t; m: the key marks +m
  local key = base .. (letter == 't' and ':open-topic' or ':moderated')
  local want = (letter == 't') ~= on  -- whether the key should exist
  if (redis.call('EXISTS', key) == 1) == want then return 2 end
  if want then redis.call('SET', key, '1') else redis.call('DEL', key) end
end
f = f .. ',"from":"' .. ARGV[5] .. '","ts":' .. ARGV[6] .. '}'
publish({'E ' .. room .. ' ' .. ARGV[7] .. '\n' .. f .. '\n'})
return 1
""",
    # ARGV: session, room, nick, extra fields (',"by":...'), tag -> the nick as written;
    # 0 not an operator, -1 not a member, -2 no such nick in the room
    "kick": r"""
local sid, room = ARGV[1], ARGV[2]
local may = may_run(sid, room)
if may < 1 then return may end
local target, nick = find_member(room, ARGV[3])
if not target then return -2 end
local records = {}
leave(tostring(math.floor(tonumber(target) / 1000000000)), target, room, 'leave', records,
      ARGV[4], ARGV[5])
publish(records)
return nick
""",
    # ARGV: node, session, room, IRC part reason -> leave (presence leave)
    "leave": r"""
local records = {}
leave(ARGV[1], ARGV[2], ARGV[3], 'leave', records, nil, nil, ARGV[4])
publish(records)
return 1
""",
    # ARGV: history_max, max_history_rooms, then room, tag, IRC client tags, frame head,
    # frame tail, sender's session per message -> the seqs (0: refused). A say whose
    # sender is not in the room (kicked meanwhile) or may not speak (+m) is refused
    # with a record in its place, so the node answers it in order with the others.
    # Beyond max_history_rooms rooms with history, the least recently written rooms
    # without members lose theirs (and stop existing).
    "say": r"""
local records, seqs = {}, {}
local history_max, max_rooms, now = ARGV[1], tonumber(ARGV[2]), now_ms()
for i = 3, #ARGV, 6 do
  local room, tag, tags, sid = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 5]
  local base = P .. 'room:' .. room
  local refusal = nil
  if redis.call('HEXISTS', base .. ':members', sid) == 0 then
    refusal = 'not_in_room'
  elseif redis.call('EXISTS', base .. ':moderated') == 1
      and redis.call('SISMEMBER', base .. ':ops', sid) == 0
      and redis.call('SISMEMBER', base .. ':voiced', sid) == 0 then
    refusal = 'moderated'
  end
  if refusal then
    records[#records + 1] = 'X ' .. room .. ' ' .. tag .. ' ' .. refusal .. '\n{}\n'
    seqs[#seqs + 1] = 0
  else
    local seq = redis.call('INCR', P .. 'room:' .. room .. ':seq')
    local frame = ARGV[i + 3] .. seq .. ARGV[i + 4]
    redis.call('XADD', P .. 'room:' .. room .. ':log', 'MAXLEN', history_max, seq .. '-0',
               'm', frame, 't', tag)
    add_room(room)
    redis.call('ZADD', P .. 'history-rooms', now, room)
    if tags ~= '' then tag = tag .. ' ' .. tags end
    records[#records + 1] = 'M ' .. room .. ' ' .. seq .. ' ' .. tag .. '\n' .. frame .. '\n'
    seqs[#seqs + 1] = seq
  end
end
-- At most 32 rooms a say: Redis runs one script at a time, and after a lowered bound
-- the excess can be large; the next says go on with it.
local excess = math.min(32, redis.call('ZCARD', P .. 'history-rooms') - max_rooms)
if excess > 0 then
  for _, room in ipairs(redis.call('ZRANGE', P .. 'history-rooms', 0, 2 * excess + 16)) do
    if excess <= 0 then break end
    if redis.call('HLEN', P .. 'room:' .. room .. ':members') == 0 then
      redis.call('UNLINK', P .. 'room:' .. room .. ':log', P .. 'room:' .. room .. ':seq',
                 P .. 'room:' .. room .. ':topic', P .. 'log:room:' .. room)
      redis.call('ZREM', P .. 'history-rooms', room)
      remove_room(room)
      excess = excess - 1
    end
  end
end
publish(records)
return seqs
""",
    # ARGV: nick, frame, position, tags ('' for none) -> 1, or 0 if nobody alive holds the nick
    "whisper": r"""
local holder = redis.call('GET', P .. 'nick:' .. string.lower(ARGV[1]))
if not holder then return 0 end
local node, sid = string.match(holder, '^(%S+) (%S+)$')
if not alive(node, now_ms()) then return 0 end
local tags = ''
if ARGV[4] ~= '' then tags = ' ' .. ARGV[4] end
publish({'W ' .. sid .. ' ' .. ARGV[3] .. tags .. '\n' .. ARGV[2] .. '\n'})
return 1
""",
    # ARGV: after ('' for the first page), limit -> more (0 or 1), room, member count, ...
    "rooms": r"""
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local names = redis.call('ZRANGEBYLEX', P .. 'room-names', from, '+', 'LIMIT', 0, tonumber(ARGV[2]) + 1)
local more = 0
if #names > tonumber(ARGV[2]) then
  more = 1
  table.remove(names)
end
local reply = {more}
for _, room in ipairs(names) do
  reply[#reply + 1] = room
  reply[#reply + 1] = redis.call('HLEN', P .. 'room:' .. room .. ':members')
end
return reply
""",
    # ARGV: node, timeout_ms, session count, (session, nick)..., (session, room)...
    # -> the sessions whose nicks were taken meanwhile. Rewrites the node's state from
    # its own: memberships that ended while Redis was unreachable get presence quit,
    # memberships that Redis lost (a dropped node, a Redis without its data) get
    # presence join.
    "resync": r"""
local node, now = ARGV[1], now_ms()
redis.call('ZADD', P .. 'nodes', now + tonumber(ARGV[2]), node)
local skey, rkey = P .. 'node:' .. node .. ':sessions', P .. 'node:' .. node .. ':rooms'
local count = tonumber(ARGV[3])
local nicks, conflicts, records = {}, {}, {}
for i = 4, 3 + 2 * count, 2 do nicks[ARGV[i]] = ARGV[i + 1] end
local old = redis.call('HGETALL', skey)
for i = 1, #old, 2 do
  local key = P .. 'nick:' .. string.lower(old[i + 1])
  if nicks[old[i]] ~= old[i + 1] and redis.call('GET', key) == node .. ' ' .. old[i] then
    redis.call('DEL', key)
  end
end
redis.call('DEL', skey)
for i = 4, 3 + 2 * count, 2 do
  local sid, nick = ARGV[i], ARGV[i + 1]
  local me = node .. ' ' .. sid
  local key = P .. 'nick:' .. string.lower(nick)
  if nick_free(key, me, now) then
    redis.call('SET', key, me)
    redis.call('HSET', skey, sid, nick)
  else
    conflicts[#conflicts + 1] = sid
    nicks[sid] = nil
  end
end
local wanted = {}
for i = 4 + 2 * count, #ARGV, 2 do
  if nicks[ARGV[i]] then wanted[ARGV[i] .. ' ' .. ARGV[i + 1]] = true end
end
for _, m in ipairs(redis.call('SMEMBERS', rkey)) do
  if not wanted[m] then
    local sid, room = string.match(m, '^(%S+) (%S+)$')
    leave(node, sid, room, 'quit', records)
  end
end
for m, _ in pairs(wanted) do
  local sid, room = string.match(m, '^(%S+) (%S+)$')
  local mkey = P .. 'room:' .. room .. ':members'
  if redis.call('HLEN', mkey) == 0 then  -- back in a room nobody else is in: it runs it
    redis.call('SADD', P .. 'room:' .. room .. ':ops', sid)
  end
  if redis.call('HSET', mkey, sid, nicks[sid]) == 1 then
    records[#records + 1] = presence_record(room, sid, '-', presence(room, nicks[sid], 'join'))
  end
  redis.call('SADD', rkey, m)
  add_room(room)
end
publish(records)
return conflicts
""",
}


def _roster(flat: Any) -> dict[int, str]:
    """HGETALL of room:R:members (a flat list, or redis-py's dict) as session id -> nick."""
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return {int(sid): nick.decode() for sid, nick in pairs}


def _view(flat: list[Any]) -> tuple[dict[int, str], RoomView]:
    """The `view` script's reply (members..., '', ops..., '', voiced..., '', open-topic,
    moderated, text, by, ts): the roster and what members see of the room."""
    end = flat.index(b"")
    roster = _roster(flat[:end])
    ops_end = flat.index(b"", end + 1)
    voiced_end = flat.index(b"", ops_end + 1)
    open_topic, moderated, text, by, ts = flat[voiced_end + 1:voiced_end + 6]
    topic = Topic(text.decode(), by.decode(), int(ts)) if text else None

    def nicks(sids: list[Any]) -> list[str]:
        chosen = {int(sid) for sid in sids}
        return sorted((nick for sid, nick in roster.items() if sid in chosen), key=str.lower)
    return roster, RoomView(sorted(roster.values(), key=str.lower), nicks(flat[end + 1:ops_end]),
                            nicks(flat[ops_end + 1:voiced_end]), topic, not int(open_topic),
                            bool(int(moderated)))


def _messages(entries: list[Any]) -> list[bytes]:
    """The msg frames of XRANGE entries [(id, {m: frame, t: tag})]."""
    return [fields[b"m"] for _, fields in entries]


class RedisBackplane:
    """A connection to the cluster's Redis: node membership, scripts, history reads,
    and a subscriber that hands each payload of the event channel to `on_payload`.

    `state()` gives the node's own truth after a reconnect: (registered sessions as
    (session id, nick), memberships as (session id, room)); `on_resync(conflicts,
    reconnected)` is called once Redis has them again, with the sessions whose nicks
    were taken meanwhile; after a reconnect, before the channel is read again.
    """

    def __init__(self, url: str, node_timeout: float, history_max: int, max_history_rooms: int, *,
                 on_payload: Callable[[bytes], None],
                 state: Callable[[], tuple[list[tuple[int, str]], list[tuple[int, str]]]],
                 on_resync: Callable[[list[int], bool], None]) -> None:
        self.url = redact(url)  # for messages: never show a password
        self.node_timeout = node_timeout
        self.history_max = history_max
        self.max_history_rooms = max_history_rooms
        self.node = 0
        self.up = False
        self._on_payload = on_payload
        self._state = state
        self._on_resync = on_resync
        self._secret_url = url
        timeout = max(2.0, node_timeout / 2)
        # A bounded pool: requests beyond it wait their turn for a connection.
        pool = redis.BlockingConnectionPool.from_url(
            self._secret_url, max_connections=POOL_SIZE, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._redis = redis.Redis(connection_pool=pool)
        self._scripts = {name: self._redis.register_script(_LUA_COMMON + body)
                         for name, body in _SCRIPTS.items()}
        self._pubsub: Any = None
        self._subscriber: gevent.Greenlet | None = None
        self._lost = Event()
        self._supervisor: gevent.Greenlet | None = None
        self._stopping = False
        self._reap_after = 0.0

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Connect, take a node id and subscribe; raise BackplaneError if Redis
        cannot be reached."""
        self.node = int(self._call("new_node", self._timeout_ms()))
        self._subscribe()
        self._start_listening()
        self.up = True
        self._reap_after = monotonic() + self.node_timeout
        self._supervisor = gevent.spawn(self._supervise)
        log.info("node %d joined the cluster at %s", self.node, self.url)

    def stop(self) -> None:
        """Leave the cluster: others see `presence quit` for this node's sessions."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.kill()
        try:
            self._call("drop", self.node)
        except BackplaneError as exc:
            log.warning("could not leave the cluster cleanly (%s); the others drop this "
                        "node after %g s", exc, self.node_timeout)
        if self._subscriber is not None:
            self._subscriber.kill()
        self._redis.close()

    def _timeout_ms(self) -> int:
        return int(self.node_timeout * 1000)

    def _subscribe(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self._pubsub = self._redis.pubsub()
        try:
            self._pubsub.subscribe(CHANNEL)
            confirmation = self._pubsub.get_message(timeout=None)
        except redis.RedisError as exc:
            raise BackplaneError(f"backplane {self.url} is unavailable: {exc}") from exc
        if not confirmation or confirmation["type"] != "subscribe":
            raise BackplaneError(f"backplane {self.url}: unexpected reply {confirmation!r}")
        self._lost.clear()

    def _start_listening(self) -> None:
        self._subscriber = gevent.spawn(self._listen, self._pubsub)

    def _listen(self, pubsub: Any) -> None:
        try:
            for message in pubsub.listen():
                if message["type"] == "message":
                    self._on_payload(message["data"])
        except redis.RedisError as exc:
            if not self._stopping:
                log.warning("backplane subscription lost: %s", exc)
        finally:
            self._lost.set()

    def _supervise(self) -> None:
        """Heartbeat and reap dead nodes; on any failure, reconnect and resync."""
        interval = max(0.05, self.node_timeout / 5)
        backoff = 0.1
        # Other nodes reconnect within this after an outage; a node back from one waits
        # as long before it judges others dead (they had no chance to heartbeat).
        max_backoff = min(2.0, self.node_timeout / 2)
        while True:
            try:
                if not self.up:
                    # Subscribed first, so nothing published from here on is missed; the
                    # listener starts after the resync, which catches up what was.
                    self._subscribe()
                    self._resync(reconnected=True)
                    self._start_listening()
                    self.up = True
                    self._reap_after = monotonic() + self.node_timeout
                    backoff = 0.1
                    log.info("backplane %s is back; node %d resynced", self.url, self.node)
                if not self._call("heartbeat", self.node, self._timeout_ms()):
                    log.warning("node %d had been dropped from the cluster; resyncing", self.node)
                    self._resync(reconnected=False)
                if monotonic() >= self._reap_after and self._call("reap"):
                    log.info("dropped dead nodes from the cluster")
                if self._lost.wait(interval):
                    raise BackplaneError("the subscription was lost")
            except BackplaneError as exc:
                if self.up:
                    log.warning("backplane unavailable (%s); reconnecting", exc)
                self.up = False
                if self._subscriber is not None:
                    self._subscriber.kill()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)

    def _resync(self, reconnected: bool) -> None:
        sessions, memberships = self._state()
        args: list[Any] = [self.node, self._timeout_ms(), len(sessions)]
        for session, nick in sessions:
            args += [session, nick]
        for session, room in memberships:
            args += [session, room]
        conflicts = self._call("resync", *args)
        self._on_resync([int(sid) for sid in conflicts], reconnected)

    # -- commands ------------------------------------------------------------------

    def _call(self, script: str, *args: Any) -> Any:
        try:
            return self._scripts[script](args=args)
        except redis.RedisError as exc:
            if isinstance(exc, redis.ResponseError):
                log.error("backplane script %s failed: %s", script, exc)
            raise BackplaneError(f"backplane {self.url} is unavailable: {exc}") from exc

    def _command(self, *args: Any) -> Any:
        try:
            return self._redis.execute_command(*args)
        except redis.RedisError as exc:
            raise BackplaneError(f"backplane {self.url} is unavailable: {exc}") from exc

    def check(self) -> str | None:
        """Why the backplane cannot be used now, or None if Redis answers (healthz)."""
        if not self.up:
            return f"backplane {self.url} is unreachable"
        try:
            self._command("PING")
        except BackplaneError as exc:
            return str(exc)
        return None

    # -- accounts (an AccountStore: accounts.py) ---------------------------------------------

    def account(self, key: str) -> Account | None:
        value = self._command("HGET", ACCOUNTS, key)
        return _account(value) if value is not None else None

    def create_account(self, account: Account) -> bool:
        return bool(self._command("HSETNX", ACCOUNTS, account.key, _account_value(account)))

    def update_account(self, account: Account) -> bool:
        return bool(self._command("EVAL", _UPDATE_ACCOUNT, 1, ACCOUNTS, account.key,
                                  _account_value(account)))

    def delete_account(self, key: str) -> bool:
        return bool(self._command("EVAL", _DELETE_ACCOUNT, 1, ACCOUNTS, key))

    def accounts(self) -> list[Account]:
        values = self._command("HGETALL", ACCOUNTS)  # redis-py gives a dict
        return sorted((_account(value) for value in values.values()), key=lambda a: a.key)

    # -- event logs (an EventLog: eventlog.py) -------------------------------------------------

    def log_append(self, entries: Sequence[tuple[str, LogEntry]]) -> None:
        for key, entry in entries:
            extra: tuple[Any, ...] = ()
            if key.startswith("dm:"):  # TARGETS: the latest time of each conversation
                _, owner, peer = key.split(":", 2)
                extra = (f"gchat:dm-peers:{owner}", peer, entry.ts, MAX_PEERS,
                         f"gchat:log:dm:{owner}:")
            keys = (f"gchat:log:{key}", *extra[:1])
            self._command("EVAL", _LOG_APPEND, len(keys), *keys, entry.pos, _log_member(entry),
                          LOG_MAX, *extra[1:])

    def log_range(self, key: str, low: int | None, high: int | None, limit: int,
                  newest: bool) -> list[LogEntry]:
        low_bound = "-inf" if low is None else f"({low}"
        high_bound = "+inf" if high is None else f"({high}"
        if newest:
            members = self._command("ZREVRANGEBYSCORE", f"gchat:log:{key}", high_bound,
                                    low_bound, "LIMIT", 0, limit)[::-1]
        else:
            members = self._command("ZRANGEBYSCORE", f"gchat:log:{key}", low_bound, high_bound,
                                    "LIMIT", 0, limit)
        return [_log_entry(member) for member in members]

    def log_seek(self, key: str, ts: int, strict: bool) -> int | None:
        found = self._command("EVAL", _LOG_SEEK, 1, f"gchat:log:{key}", ts, int(strict))
        return int(float(found)) if found is not None else None

    def log_last(self, key: str) -> int | None:
        found = self._command("ZRANGE", f"gchat:log:{key}", -1, -1, "WITHSCORES")
        return int(found[0][1]) if found else None  # [(member, score)]

    def log_peers(self, owner: str) -> list[tuple[str, int]]:
        flat = self._command("ZRANGE", f"gchat:dm-peers:{owner.lower()}", 0, -1, "WITHSCORES")
        return [(peer.decode(), int(ts)) for peer, ts in flat]

    def log_forget(self, key: str) -> None:
        self._command("DEL", f"gchat:log:{key}")

    def claim(self, session: int, nick: str) -> bool:
        """Take `nick` for `session` cluster-wide; False if a live session holds it."""
        return bool(self._call("claim", self.node, session, nick))

    def unregister(self, session: int, nick: str, rooms: Sequence[str],
                   reason: str | None = None) -> None:
        """Free the nick; leave `rooms` with presence quit (and an IRC user's `reason`)."""
        self._call("unregister", self.node, session, nick, reason or "", *rooms)

    def rename(self, session: int, old: str, new: str, rooms: Sequence[str]) -> str:
        """Rename cluster-wide, with presence rename in `rooms`: "ok", "taken", or
        "gone" when Redis holds no such session (it ended), which changes nothing."""
        result = int(self._call("rename", self.node, session, old, new, *rooms))
        return "ok" if result == 1 else "taken" if result == 0 else "gone"

    def join(self, session: int, nick: str, room: str, tag: str, after: int | None,
             max_recover: int, history_on_join: int, rejoin_bound: int | None = None,
             fold: bool = False) -> tuple[str, int, dict[int, str], RoomView, list[bytes],
                                          bool] | None:
        """Join `room` (or, with `rejoin_bound`, only read it as of that seq; with
        `fold`, the existing room whose name folds to it, if `room` does not exist):
        the room joined, its seq at the join, its members (session id -> nick), what
        members see of it, the join's history and whether it recovered. A new join
        publishes presence join with `tag`. None when Redis holds no such session (it
        ended): nothing changed."""
        reply = self._call("join", self.node, session, nick, room, tag,
                           -1 if after is None else after, max_recover, history_on_join,
                           -1 if rejoin_bound is None else rejoin_bound, 1 if fold else 0)
        if len(reply) == 1:
            return None
        members_end = reply.index(b"", 1)
        history_end = reply.index(b"", members_end + 1)  # the room's view follows
        roster, view = _view([*reply[1:members_end], b"", *reply[history_end + 1:-2]])
        return (reply[-1].decode(), int(reply[0]), roster, view,
                list(reply[members_end + 1:history_end]), bool(reply[-2]))

    def view(self, room: str) -> RoomView:
        """What members see of `room`: members, operators, topic."""
        return _view(self._call("view", room))[1]

    def topic(self, session: int, room: str, topic: Topic | None, frame: bytes, tag: str) -> int:
        """Set (None: clear) the topic and publish `frame` with `tag`: 1, or 0 if the
        session may not (+t, not an operator), -1 if it is not in the room."""
        text, by, ts = topic if topic is not None else ("", "", 0)
        return int(self._call("topic", session, room, text, by, ts, frame, tag))

    def mode(self, session: int, room: str, change: str, nick: str, by: str, ts: int,
             tag: str) -> int:
        """An operator's change (+o -o +v -v with `nick`, +t -t +m -m): 1 published with
        `tag`, 2 changed nothing, 0 not an operator, -1 not a member, -2 no such nick
        there."""
        return int(self._call("mode", session, room, change, nick, by, ts, tag))

    def kick(self, session: int, room: str, nick: str, extra: bytes, tag: str) -> str | int:
        """An operator takes `nick` out (presence leave with the `extra` JSON fields,
        published with `tag`): the nick as written, or 0, -1, -2 as `mode`."""
        result = self._call("kick", session, room, nick, extra, tag)
        return result.decode() if isinstance(result, bytes) else int(result)

    def leave(self, session: int, room: str, reason: str | None = None) -> None:
        """Leave `room`, with presence leave (and an IRC user's `reason`)."""
        self._call("leave", self.node, session, room, reason or "")

    def say(self, messages: Sequence[tuple[str, str, str, bytes, bytes, int]]) -> list[int]:
        """Store and publish (room, tag, IRC client tags, frame head, frame tail, sender's
        session) messages: each frame is head + seq + tail. Returns the seqs, 0 for a
        say refused (its sender not in the room, or not allowed to speak in it)."""
        args: list[Any] = [self.history_max, self.max_history_rooms]
        for message in messages:
            args.extend(message)
        return [int(seq) for seq in self._call("say", *args)]

    def whisper(self, nick: str, frame: bytes, position: int, tags: str = "") -> bool:
        """Send `frame` to whoever holds `nick`, on whichever node, with its log position
        and an IRC sender's client-only tags; False if nobody does."""
        return bool(self._call("whisper", nick, frame, position, tags))

    def rooms(self, after: str | None, limit: int) -> tuple[list[tuple[str, int]], bool]:
        """A page of the rooms in the cluster, in code point order, with their member
        counts: up to `limit` named after `after`; and whether more follow."""
        flat = self._call("rooms", after or "", limit)
        return ([(flat[i].decode(), int(flat[i + 1])) for i in range(1, len(flat), 2)],
                bool(flat[0]))

    def room_exists(self, room: str) -> bool:
        """Whether the room has members or history anywhere in the cluster."""
        return self._command("ZSCORE", "gchat:room-names", room) is not None

    def find_folded(self, room: str) -> str | None:
        """The room whose name is `room` under ASCII case folding: `room` itself if it
        exists, else the first such name in code point order; None if there is none."""
        if self.room_exists(room):
            return room
        folded = room.lower()
        found = self._command("ZRANGEBYLEX", "gchat:room-folds", f"[{folded} ",
                              f"[{folded}!", "LIMIT", 0, 1)
        return found[0].decode().split(" ", 1)[1] if found else None

    def holder(self, nick: str) -> int | None:
        """The session id that holds `nick` in the cluster, if any."""
        value = self._command("GET", f"gchat:nick:{nick.lower()}")
        return int(value.split(b" ")[1]) if value else None

    def members(self, room: str) -> dict[int, str]:
        """Who is in `room`, cluster-wide: session id -> nick."""
        return _roster(self._command("HGETALL", f"gchat:room:{room}:members"))

    def after(self, room: str, seq: int, limit: int) -> list[bytes]:
        """The earliest `limit` stored messages with a seq above `seq`."""
        return _messages(self._command("XRANGE", f"gchat:room:{room}:log", f"({seq}-0", "+",
                                       "COUNT", limit))

    def before(self, room: str, seq: int, limit: int) -> list[bytes]:
        """The latest `limit` stored messages with a seq below `seq`, oldest first."""
        if seq <= 1:
            return []
        entries = self._command("XREVRANGE", f"gchat:room:{room}:log", f"({seq}-0", "-",
                                "COUNT", limit)
        return _messages(entries[::-1])

    def latest(self, room: str, limit: int) -> list[bytes]:
        """The newest `limit` stored messages, oldest first."""
        return _messages(self._command("XREVRANGE", f"gchat:room:{room}:log", "+", "-",
                                       "COUNT", limit)[::-1])

    def tags_after(self, room: str, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """(seq, tag, frame) of stored messages after `seq`: a node catching up."""
        entries = self._command("XRANGE", f"gchat:room:{room}:log", f"({seq}-0", "+",
                                "COUNT", limit)
        return [(int(entry_id.split(b"-")[0]), fields[b"t"].decode(), fields[b"m"])
                for entry_id, fields in entries]
