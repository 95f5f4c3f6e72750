// gchat in the browser: PROTOCOL.md over a WebSocket on the page's own origin (/ws),
// one JSON frame per text message.
//
// Strategy, as the terminal client's (gchat/client/chat.py): per joined room we keep the
// seq of the last message shown. A msg whose seq is not above it, or that was shown
// already, is dropped; every other one is shown and moves it on. While a join is in
// flight (the first one, or a rejoin after a reconnect, sent with `after` = that seq) the
// room's live messages are held back; the join's history (and, when the server could
// not recover the whole gap, `history after=` pages) then the held messages are shown
// in seq order: no duplicate, no gap. A dropped connection is retried with backoff
// (0.5 s doubling to 10 s, with jitter), with the same nick, rejoining every room.
//
// Accounts (docs/protocol.md, hello's proto 2): the login form's password logs in as the
// nick's account; with "register" ticked the page says hello without it, then makes the
// nick an account (the `register` op) and is logged in. The password is kept in memory
// only (never in localStorage or the form) to log in again after a reconnect.
//
// Everything the server or a user wrote is put in the page as text (textContent),
// never as HTML.

(() => {
  "use strict";

  const CATCH_UP_PAGE = 100; // the largest `history` page (PROTOCOL.md 4)
  const OLDER_PAGE = 50;
  const FIRST_BACKOFF = 500;
  const MAX_BACKOFF = 10000;
  // What a `bye` reason means, for the status line (unknown reasons are shown as they are).
  const BYE_REASONS = {
    shutdown: "the server shut down", idle_timeout: "idle for too long",
    slow_consumer: "this page read too slowly", kicked: "an operator closed the connection",
    server_full: "the server is full", frame_too_large: "a frame too large", quit: "you quit",
  };
  const NICK_COLOURS = ["#c0392b", "#1e8449", "#b9770e", "#2e86c1", "#8e44ad", "#16a085",
    "#d35400", "#2c3e91", "#a93279", "#5d6d1e", "#7b4b2a", "#0e6f8a"];

  const ui = {};
  for (const id of ["app", "rooms-toggle", "toggle-unread", "status", "room-list", "join-form",
    "join-room", "list-rooms", "member-count", "member-list", "room-name", "topic",
    "messages", "say-form", "say", "login", "login-form", "nick", "password", "register-choice",
    "register", "token", "first-room", "login-error", "connect"]) {
    ui[id.replace(/-(.)/g, (_, c) => c.toUpperCase())] = document.getElementById(id);
  }

  const state = {
    nick: null,
    token: null,
    login: null, // {account, password}: to log in again after a reconnect (memory only)
    account: null, // the account the session is logged in as
    signingUp: false, // register the nick once hello is answered
    ws: null,
    online: false, // registered and every room rejoined
    registered: false, // ever registered since the user pressed Connect
    stopped: true, // no reconnecting (before Connect, after /quit or a refusal)
    bye: null, // the reason of the last `bye`
    refusal: null, // why the server refused our hello, when it will be retried
    outage: null, // why the connection was lost, until it is back
    backoff: FIRST_BACKOFF,
    retry: null, // {timer, ticker} while waiting to reconnect
    nextId: 1,
    pending: new Map(), // request id -> {resolve, reject}
    held: new Map(), // room -> live msgs held back while its join is in flight
    rooms: new Map(), // room -> Room (below)
    current: null,
    historyOnJoin: 20,
    maxText: 4096,
    system: null, // the log shown when no room is joined
  };

  class RequestError extends Error {
    constructor(code, message) {
      super(message || code);
      this.code = code;
    }
  }

  // -- small helpers ---------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(ts) {
    const date = ts ? new Date(ts) : new Date();
    return String(date.getHours()).padStart(2, "0") + ":" + String(date.getMinutes()).padStart(2, "0");
  }

  // The same colour for a nick in any case, in every session (FNV-1a of the lower case).
  function nickColour(nick) {
    let hash = 0x811c9dc5;
    for (const ch of String(nick).toLowerCase()) {
      hash = Math.imul(hash ^ ch.codePointAt(0), 0x01000193) >>> 0;
    }
    return NICK_COLOURS[hash % NICK_COLOURS.length];
  }

  function nickSpan(nick, before = "", after = "") {
    const span = el("span", "nick", before + nick + after);
    span.style.color = nickColour(nick);
    return span;
  }

  // Nicks compare ASCII-case-insensitively (PROTOCOL.md 3).
  function sameNick(a, b) {
    return a.toLowerCase() === b.toLowerCase();
  }

  function byNick(a, b) {
    const x = a.toLowerCase(), y = b.toLowerCase();
    return x < y ? -1 : x > y ? 1 : 0;
  }

  // -- the connection ----------------------------------------------------------------------

  function connect() {
    clearRetry();
    state.bye = null;
    state.refusal = null;
    setStatus("connecting", `connecting to ${location.host}…`);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws");
    state.ws = ws;
    ws.onopen = () => register(ws);
    ws.onmessage = (event) => {
      if (ws !== state.ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        console.warn("not a JSON frame", event.data);
        return;
      }
      onFrame(frame);
    };
    ws.onclose = () => {
      if (ws === state.ws) onClosed();
    };
  }

  function send(frame) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function request(op, fields = {}) {
    const id = state.nextId++;
    if (!send({ op, id, ...fields })) {
      return Promise.reject(new RequestError("disconnected", "not connected"));
    }
    return new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
  }

  async function register(ws) {
    const fields = { nick: state.nick, proto: 2 };
    if (state.token) fields.token = state.token;
    // After a /nick away from the account's nick, the page comes back as a guest.
    if (state.login && !state.signingUp && sameNick(state.login.account, state.nick)) {
      fields.password = state.login.password;
    }
    let hello;
    try {
      hello = await request("hello", fields);
      if (hello.registration) ui.registerChoice.hidden = hello.registration !== "open";
      state.account = hello.account ?? null;
      if (state.signingUp) await signUp(hello);
    } catch (err) {
      if (ws !== state.ws) return;
      // Registering a nick that is an account already: say so, not "log in".
      refused(ws, state.signingUp && err.code === "account_required" ? new RequestError("account_exists") : err);
      return;
    }
    const rejoining = state.registered;
    state.registered = true;
    state.outage = null;
    state.backoff = FIRST_BACKOFF;
    state.nick = hello.nick;
    state.historyOnJoin = (hello.limits || {}).history_on_join ?? 20;
    state.maxText = (hello.limits || {}).max_text ?? 4096;
    localStorage.setItem("gchat.nick", state.nick);
    ui.password.value = ""; // kept in state.login only
    ui.login.hidden = true;
    if (!rejoining && state.account) notice(`logged in as ${state.account}`);
    setStatus("connecting", `connected as ${state.nick}, joining rooms…`);
    if (rejoining) {
      await Promise.all([...state.rooms.keys()].map((room) => rejoin(room)));
    } else if (ui.firstRoom.value.trim()) {
      await runLine("/join " + ui.firstRoom.value.trim());
    }
    if (ws !== state.ws || ws.readyState !== WebSocket.OPEN) return;
    state.online = true;
    setStatus("connected", `connected as ${state.nick}`);
    if (rejoining) notice("reconnected");
    else ui.say.focus();
  }

  // After hello, with "register" ticked: make the nick an account with the password.
  async function signUp(hello) {
    if (hello.registration !== "open") throw new RequestError("registration_closed");
    state.account = (await request("register", { password: state.login.password })).account;
    state.login.account = state.account;
    state.signingUp = false;
    notice(`registered ${state.account}: from now on only its password logs in as ${state.account}`);
  }

  // hello was refused. Before the first success, or when the answer will not change, the
  // user must act: back to the login form. Otherwise (a nick our lost connection still
  // holds, a full server) retry later.
  function refused(ws, err) {
    const hint = explain(err, { name: "hello", args: [state.nick] });
    const forGood = ["unauthorized", "invalid_nick", "bad_args", "account_required", "bad_password"];
    if (!state.registered || forGood.includes(err.code)) {
      stop(hint);
    } else {
      state.refusal = hint;
    }
    ws.close();
  }

  function onClosed() {
    state.online = false;
    for (const { reject } of state.pending.values()) {
      reject(new RequestError("disconnected", "not connected"));
    }
    state.pending.clear();
    if (state.stopped) return;
    if (!state.registered) {
      // Reached under a DNS name the server does not list, the WebSocket is refused
      // (docs/web.md, the Origin policy): say so, since the browser will not.
      const named = !/^(localhost|[0-9.]+|\[[0-9a-f:.]+\])$/i.test(location.hostname);
      stop(`cannot reach the chat server at ${location.host}` + (named
        ? ` (if it runs, it must list this address: --http-origins ${location.origin})` : ""));
      return;
    }
    // The first reason stays on the status line while the next attempts fail.
    let why = state.outage || "connection lost";
    if (state.bye) why = `bye: ${state.bye}` + (BYE_REASONS[state.bye] ? `, ${BYE_REASONS[state.bye]}` : "");
    if (!state.outage) notice(`disconnected (${why}); reconnecting`);
    state.outage = why;
    scheduleReconnect(state.refusal || why);
  }

  function scheduleReconnect(why) {
    const delay = state.backoff * (0.8 + Math.random() * 0.4);
    state.backoff = Math.min(state.backoff * 2, MAX_BACKOFF);
    const at = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      setStatus("disconnected", `disconnected (${why}); reconnecting in ${left} s`);
      ui.status.dataset.retryMs = String(Math.round(delay));
    };
    tick();
    state.retry = { timer: setTimeout(connect, delay), ticker: setInterval(tick, 1000) };
  }

  function clearRetry() {
    if (!state.retry) return;
    clearTimeout(state.retry.timer);
    clearInterval(state.retry.ticker);
    state.retry = null;
    delete ui.status.dataset.retryMs;
  }

  // No more reconnecting: show the login form with `why`.
  function stop(why) {
    state.stopped = true;
    state.login = null;
    state.signingUp = false;
    state.online = false;
    clearRetry();
    setStatus("offline", why ? `not connected: ${why}` : "not connected");
    ui.loginError.textContent = why || "";
    ui.connect.disabled = false;
    ui.login.hidden = false;
    ui.nick.focus();
  }

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
  }

  // -- frames from the server ---------------------------------------------------------------

  function onFrame(frame) {
    switch (frame.op) {
      case "ok":
      case "error":
        return settle(frame);
      case "ping":
        return send({ op: "pong" });
      case "msg":
        return onMsg(frame);
      case "whisper":
        return show(currentLog(), whisperLine(frame.from, frame.text, frame.ts, false));
      case "presence":
        return onPresence(frame);
      case "topic":
        return onTopic(frame);
      case "mode":
        return onMode(frame);
      case "kicked":
        return onKicked(frame);
      case "bye":
        state.bye = frame.reason;
        return undefined;
      default:
        return undefined; // PROTOCOL.md: clients ignore events they do not know
    }
  }

  function settle(frame) {
    const waiting = state.pending.get(frame.id);
    if (!waiting) {
      if (frame.op === "error") error(`the server said: ${frame.message || frame.code}`);
      return;
    }
    state.pending.delete(frame.id);
    if (frame.op === "ok") waiting.resolve(frame);
    else waiting.reject(new RequestError(frame.code, frame.message));
  }

  function onMsg(frame) {
    const held = state.held.get(frame.room);
    if (held) held.push(frame);
    else if (state.rooms.has(frame.room)) showMsgs(state.rooms.get(frame.room), [frame], true);
  }

  function onPresence(frame) {
    const room = state.rooms.get(frame.room);
    if (!room) return;
    const { nick, old } = frame;
    let what;
    if (frame.event === "join") {
      what = `${nick} joined ${room.name}`;
      if (!room.members.includes(nick)) room.members.push(nick);
    } else if (frame.event === "rename") {
      what = `${old} is now ${nick}`;
      room.members = room.members.map((m) => (m === old ? nick : m));
      if (room.ops.delete(old)) room.ops.add(nick);
    } else {
      what = frame.event === "quit" ? `${nick} quit` : `${nick} left ${room.name}`;
      if (frame.by) {
        what = `${nick} was kicked from ${room.name} by ${frame.by}` + (frame.reason ? `: ${frame.reason}` : "");
      }
      room.members = room.members.filter((m) => m !== nick);
      room.ops.delete(nick);
    }
    room.members.sort(byNick);
    show(room.log, eventLine(what, undefined, "presence"));
    if (room.name === state.current) renderMembers();
  }

  function onTopic(frame) {
    const room = state.rooms.get(frame.room);
    if (!room) return;
    room.topic = frame.topic || null;
    const what = frame.topic ? `${frame.from} set the topic: ${frame.topic}` : `${frame.from} cleared the topic`;
    show(room.log, eventLine(what, frame.ts, "topic-change"));
    if (room.name === state.current) renderRoomBar();
  }

  function onMode(frame) {
    const room = state.rooms.get(frame.room);
    if (!room) return;
    if (frame.change === "+o") room.ops.add(frame.nick);
    if (frame.change === "-o") room.ops.delete(frame.nick);
    const whom = frame.nick ? ` ${frame.nick}` : "";
    show(room.log, eventLine(`${frame.from} set ${room.name} ${frame.change}${whom}`, frame.ts, "presence"));
    if (room.name === state.current) renderMembers();
  }

  function onKicked(frame) {
    removeRoom(frame.room);
    const why = frame.reason ? `: ${frame.reason}` : "";
    error(`you were kicked from ${frame.room} by ${frame.by}${why}`);
  }

  // -- rooms ---------------------------------------------------------------------------------

  function addRoom(name) {
    const log = el("div", "log away");
    log.dataset.room = name;
    const older = el("button", "older", "show older messages");
    older.type = "button";
    older.hidden = true;
    log.append(older);
    const item = el("li");
    const button = el("button", "room", name);
    button.type = "button";
    const badge = el("span", "unread");
    badge.hidden = true;
    item.append(button, badge);
    ui.roomList.append(item);
    ui.messages.append(log);
    const room = {
      name, log, older, item, badge,
      last: null, // seq of the last message shown
      oldest: null, // seq of the first message shown
      seen: new Set(),
      noOlder: false,
      loadingOlder: false,
      stick: true, // scrolled to the bottom: follow new lines
      unread: 0,
      members: [],
      ops: new Set(),
      topic: null,
    };
    state.rooms.set(name, room);
    button.addEventListener("click", () => {
      switchTo(name);
      closeSidebar();
    });
    older.addEventListener("click", () => loadOlder(room));
    log.addEventListener("scroll", () => {
      room.stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      if (log.scrollTop < 40) loadOlder(room);
    });
    return room;
  }

  function removeRoom(name) {
    const room = state.rooms.get(name);
    if (!room) return;
    state.rooms.delete(name);
    room.log.remove();
    room.item.remove();
    if (state.current === name) switchTo(state.rooms.keys().next().value ?? null);
    renderUnread();
  }

  function switchTo(name) {
    state.current = name;
    for (const room of state.rooms.values()) {
      const here = room.name === name;
      room.log.classList.toggle("away", !here); // hidden, its scroll position kept
      room.item.classList.toggle("current", here);
      if (here) {
        room.unread = 0;
        if (room.stick) room.log.scrollTop = room.log.scrollHeight;
      }
    }
    state.system.classList.toggle("away", name !== null);
    renderUnread();
    renderRoomBar();
    renderMembers();
  }

  async function join(name) {
    const room = state.rooms.get(name);
    if (room) {
      switchTo(name);
      return;
    }
    if (state.held.has(name)) return; // being joined already
    state.held.set(name, []);
    try {
      const reply = await request("join", { room: name });
      const created = addRoom(name);
      const history = reply.history || [];
      if (history.length) created.last = history[0].seq - 1;
      else created.last = state.historyOnJoin > 0 ? 0 : null;
      updateMembers(created, reply);
      created.topic = reply.topic ? reply.topic.text : null;
      showMsgs(created, history, false);
      showMsgs(created, state.held.get(name), true);
      switchTo(name);
    } finally {
      state.held.delete(name);
    }
  }

  // Join again after a reconnect, and show exactly what was missed.
  async function rejoin(name) {
    const room = state.rooms.get(name);
    state.held.set(name, []);
    try {
      const fields = { room: name };
      if (room.last !== null) fields.after = room.last;
      const reply = await request("join", fields);
      let history = reply.history || [];
      if (room.last !== null && !reply.recovered) {
        if (wasReset(room, history)) {
          notice(`the server lost the history of ${name}: numbering starts again`, room.log);
          room.last = history.length ? history[0].seq - 1 : 0;
          room.seen.clear();
          room.noOlder = true; // older pages would mix the two numberings
        } else {
          history = await pageAfter(name, room.last);
        }
      }
      updateMembers(room, reply);
      room.topic = reply.topic ? reply.topic.text : null;
      const caught = showMsgs(room, history, true);
      showMsgs(room, state.held.get(name), true);
      if (caught) notice(`caught up ${caught} message${caught === 1 ? "" : "s"} in ${name}`, room.log);
      if (name === state.current) {
        renderRoomBar();
        renderMembers();
      }
    } catch (err) {
      if (err.code === "disconnected") return; // the next connection tries again
      error(`could not rejoin ${name}: ${explain(err, { name: "join", args: [name] })}`);
      removeRoom(name);
    } finally {
      state.held.delete(name);
    }
  }

  // A room whose newest message is older than what we saw was made again (a server
  // without durable history restarted): its seqs count from 1 again.
  function wasReset(room, history) {
    if (history.length) return history[history.length - 1].seq < room.last;
    return state.historyOnJoin > 0;
  }

  async function pageAfter(name, last) {
    const messages = [];
    for (;;) {
      const after = messages.length ? messages[messages.length - 1].seq : last;
      const page = (await request("history", { room: name, after, limit: CATCH_UP_PAGE })).messages;
      messages.push(...page);
      if (page.length < CATCH_UP_PAGE) return messages;
    }
  }

  function updateMembers(room, reply) {
    room.members = (reply.members || []).slice().sort(byNick);
    room.ops = new Set(reply.ops || []);
  }

  // Show the msgs of `room` newer than the last shown, in seq order; how many were shown.
  function showMsgs(room, frames, live) {
    let shown = 0;
    for (const frame of frames.slice().sort((a, b) => a.seq - b.seq)) {
      if ((room.last !== null && frame.seq <= room.last) || room.seen.has(frame.seq)) continue;
      room.last = frame.seq;
      room.seen.add(frame.seq);
      if (room.oldest === null) room.oldest = frame.seq;
      show(room.log, msgLine(frame));
      shown += 1;
      if (live && room.name !== state.current) room.unread += 1;
    }
    renderOlder(room);
    if (shown) renderUnread();
    return shown;
  }

  function hasOlder(room) {
    return !room.noOlder && room.oldest !== null && room.oldest > 1;
  }

  // Older history, prepended without moving what the user is looking at.
  async function loadOlder(room) {
    if (room.loadingOlder || !hasOlder(room) || !state.online) return;
    room.loadingOlder = true;
    renderOlder(room);
    try {
      const reply = await request("history", { room: room.name, before: room.oldest, limit: OLDER_PAGE });
      const older = reply.messages.filter((m) => m.seq < room.oldest && !room.seen.has(m.seq));
      if (reply.messages.length < OLDER_PAGE) room.noOlder = true;
      if (older.length) {
        const log = room.log;
        const fromBottom = log.scrollHeight - log.scrollTop;
        const lines = document.createDocumentFragment();
        for (const frame of older.sort((a, b) => a.seq - b.seq)) {
          room.seen.add(frame.seq);
          lines.append(msgLine(frame));
        }
        room.older.after(lines);
        room.oldest = older[0].seq;
        log.scrollTop = log.scrollHeight - fromBottom;
      }
    } catch (err) {
      if (err.code !== "disconnected") error(`older messages: ${explain(err, { name: "history", args: [] })}`);
    } finally {
      room.loadingOlder = false;
      renderOlder(room);
    }
  }

  // -- lines in a log ------------------------------------------------------------------------

  function currentLog() {
    return state.current ? state.rooms.get(state.current).log : state.system;
  }

  function show(log, line) {
    const room = state.rooms.get(log.dataset.room);
    const follow = room ? room.stick : true;
    log.append(line);
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function msgLine(frame) {
    const line = el("div", "line msg");
    line.dataset.seq = String(frame.seq);
    line.dataset.from = frame.from;
    if (frame.from === state.nick) line.classList.add("mine");
    line.append(el("time", "time", clock(frame.ts)), " ", nickSpan(frame.from, "", ""), " ",
      el("span", "text", frame.text));
    return line;
  }

  function whisperLine(nick, text, ts, sent) {
    const line = el("div", "line whisper" + (sent ? " sent" : ""));
    line.append(el("time", "time", clock(ts)), " ", el("span", "arrow", sent ? "→ " : ""),
      nickSpan(nick, "*", "*"), " ", el("span", "text", text));
    return line;
  }

  function eventLine(what, ts, kind) {
    const line = el("div", "line " + kind);
    const dash = kind === "notice" || kind === "error" ? "" : "— ";
    line.append(el("time", "time", clock(ts)), " ", el("span", "text", dash + what));
    return line;
  }

  function notice(text, log = currentLog()) {
    show(log, eventLine(text, undefined, "notice"));
  }

  function error(text, log = currentLog()) {
    show(log, eventLine(text, undefined, "error"));
  }

  // -- rendering -----------------------------------------------------------------------------

  function renderRoomBar() {
    const room = state.rooms.get(state.current);
    ui.roomName.textContent = room ? room.name : "no room";
    ui.topic.textContent = room && room.topic ? room.topic : "";
    ui.topic.title = ui.topic.textContent;
  }

  function renderMembers() {
    const room = state.rooms.get(state.current);
    const members = room ? room.members : [];
    ui.memberList.replaceChildren(...members.map((nick) => {
      const item = el("li");
      if (room.ops.has(nick)) item.append(el("span", "op", "@"));
      item.append(nickSpan(nick));
      return item;
    }));
    ui.memberCount.textContent = room ? `(${members.length})` : "";
  }

  function renderUnread() {
    let total = 0;
    for (const room of state.rooms.values()) {
      room.badge.textContent = room.unread ? String(room.unread) : "";
      room.badge.hidden = room.unread === 0;
      total += room.unread;
    }
    ui.toggleUnread.textContent = String(total);
    ui.toggleUnread.hidden = total === 0;
    document.title = total ? `(${total}) gchat` : "gchat";
  }

  function renderOlder(room) {
    room.older.hidden = !hasOlder(room);
    room.older.disabled = room.loadingOlder;
    room.older.textContent = room.loadingOlder ? "loading older messages…" : "show older messages";
  }

  function closeSidebar() {
    ui.app.classList.remove("sidebar-open");
    ui.roomsToggle.setAttribute("aria-expanded", "false");
  }

  // -- commands ------------------------------------------------------------------------------

  const HELP = [
    "Type a line to say it in the current room (start it with // to say a line that starts with /).",
    "/join ROOM — join ROOM and make it current",
    "/leave [ROOM] — leave ROOM (or the current one)",
    "/switch ROOM — make a joined ROOM current (or click it)",
    "/msg NICK TEXT — whisper TEXT to NICK",
    "/nick NAME — change your nick",
    "/rooms [AFTER] — list the rooms (after AFTER)",
    "/who [ROOM] — who is in ROOM (@: operators)",
    "/topic [TEXT] — show or set the room's topic",
    "/kick NICK [WHY] — put NICK out of the room (operators)",
    "/mode +o|-o NICK, /mode +t|-t — operators, and who may set the topic",
    "/quit — disconnect",
    "/help — this help",
  ];

  // name: [least, most arguments, usage]; /msg's TEXT and /kick's WHY take the rest
  const COMMANDS = {
    join: [1, 1, "/join ROOM"], leave: [0, 1, "/leave [ROOM]"], switch: [1, 1, "/switch ROOM"],
    msg: [2, 2, "/msg NICK TEXT"], nick: [1, 1, "/nick NAME"], rooms: [0, 1, "/rooms [AFTER]"],
    who: [0, 1, "/who [ROOM]"], topic: [0, 1, "/topic [TEXT]"], kick: [1, 2, "/kick NICK [WHY]"],
    mode: [1, 2, "/mode +o|-o NICK or /mode +t|-t"], quit: [0, 0, "/quit"], help: [0, 0, "/help"],
  };

  function splitWords(text, most) {
    const words = text.trim().split(/\s+/).filter(Boolean);
    if (words.length <= most) return words;
    const head = words.slice(0, most - 1);
    let rest = text.trim();
    for (const word of head) rest = rest.slice(rest.indexOf(word) + word.length).replace(/^\s+/, "");
    return [...head, rest];
  }

  // The command a typed line means: {name, args} or {error}; null for a blank line.
  function parse(line) {
    if (!line.trim()) return null;
    if (!line.startsWith("/") || line.startsWith("//")) {
      return { name: "say", args: [line.startsWith("//") ? line.slice(1) : line] };
    }
    const space = line.search(/\s/);
    const name = (space < 0 ? line.slice(1) : line.slice(1, space)).toLowerCase();
    const rest = space < 0 ? "" : line.slice(space + 1);
    if (!(name in COMMANDS)) return { error: `there is no command /${name}: type /help for the list` };
    const [least, most, usage] = COMMANDS[name];
    if (name === "topic") return { name, args: rest.trim() ? [rest.trim()] : [] };
    const words = ["msg", "kick"].includes(name) ? splitWords(rest, most) : rest.trim().split(/\s+/).filter(Boolean);
    if (words.length < least || words.length > most) return { error: `usage: ${usage}` };
    return { name, args: words };
  }

  const HINTS = {
    not_in_room: "you are not in {room}: /join {room} first",
    no_room: "you are in no room: /join one first",
    invalid_room: "“{room}” is not a room name: letters, digits, _ . - (up to 64), maybe after a #",
    no_such_room: "there is no room {room}: /rooms lists them",
    too_many_rooms: "you are in too many rooms: /leave one first",
    invalid_nick: "“{nick}” is not a nick: a letter, then up to 31 letters, digits, _ or -",
    nick_taken: "{nick} is taken: pick another",
    no_such_nick: "nobody is called {nick}: /who shows who is in a room",
    unauthorized: "the server refused the token: it needs the right one",
    server_full: "the server is full: try again later",
    text_too_long: "that message is too long: split it",
    rate_limited: "slow down: the server allows only so many messages a second",
    disconnected: "not connected: reconnecting, try again in a moment",
    unavailable: "the server cannot store messages right now: try again later",
    account_required: "{nick} is a registered nick: enter its password, or pick another nick",
    bad_password: "wrong password for {nick}",
    too_many_attempts: "{message}",
    weak_password: "too weak a password: {message}",
    account_exists: "{nick} is registered already: log in with its password, or pick another nick",
    registration_closed: "this server does not let users register nicks: connect without registering",
    not_operator: "only operators of {room} may do that",
    moderated: "{room} is moderated: only operators and voiced members may talk",
  };

  function explain(err, command) {
    const args = command.args || [];
    const room = args.length && ["join", "leave", "switch", "who"].includes(command.name) ? args[0] : state.current;
    let nick = args.length && ["hello", "nick", "msg", "kick"].includes(command.name) ? args[0] : state.nick;
    if (command.name === "mode" && args.length === 2) nick = args[1];
    const hint = HINTS[err.code];
    if (!hint) return `/${command.name} failed: ${err.message || err.code}`;
    return hint.replaceAll("{room}", room).replaceAll("{nick}", nick).replaceAll("{message}", err.message);
  }

  // Carry out a line the user typed; false if it failed (an error line says why).
  async function runLine(line) {
    const command = parse(line);
    if (command === null) return true;
    if (command.error) {
      error(command.error);
      return false;
    }
    try {
      await run(command);
      return true;
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      error(explain(err, command));
      return false;
    }
  }

  function needRoom() {
    if (state.current === null) throw new RequestError("no_room");
    return state.current;
  }

  // The server refuses a text that is too long (a huge one even ends the connection).
  function checkLength(text) {
    if ([...text].length > state.maxText) throw new RequestError("text_too_long");
    return text;
  }

  async function run({ name, args }) {
    if (name === "help") {
      for (const line of HELP) notice(line);
      return;
    }
    if (name === "quit") {
      stop("you quit");
      await request("quit").catch(() => undefined);
      return;
    }
    if (name === "join") return join(args[0]);
    if (name === "switch") {
      if (!state.rooms.has(args[0])) throw new RequestError("not_in_room");
      switchTo(args[0]);
      return;
    }
    if (name === "say") {
      await request("say", { room: needRoom(), text: checkLength(args[0]) });
    } else if (name === "leave") {
      const room = args[0] || needRoom();
      await request("leave", { room });
      removeRoom(room);
    } else if (name === "msg") {
      await request("whisper", { to: args[0], text: checkLength(args[1]) });
      show(currentLog(), whisperLine(args[0], args[1], undefined, true));
    } else if (name === "nick") {
      const old = state.nick;
      state.nick = (await request("nick", { nick: args[0] })).nick;
      for (const room of state.rooms.values()) {
        room.members = room.members.map((m) => (m === old ? state.nick : m)).sort(byNick);
        if (room.ops.delete(old)) room.ops.add(state.nick);
      }
      renderMembers();
      notice(`you are now ${state.nick}`);
      setStatus("connected", `connected as ${state.nick}`);
    } else if (name === "rooms") {
      showRooms(await request("rooms", args.length ? { after: args[0] } : {}));
    } else if (name === "who") {
      const reply = await request("who", { room: args[0] || needRoom() });
      const ops = new Set(reply.ops || []);
      const names = reply.members.map((n) => (ops.has(n) ? "@" : "") + n).join(", ");
      notice(`in ${reply.room}: ${names || "nobody"}`);
    } else if (name === "topic") {
      const reply = await request("topic", { room: needRoom(), ...(args.length ? { text: args[0] } : {}) });
      if (!args.length) {
        const topic = reply.topic;
        notice(`topic of ${reply.room}: ${topic ? `${topic.text} (set by ${topic.by})` : "no topic"}`);
      }
    } else if (name === "kick") {
      await request("kick", { room: needRoom(), nick: args[0], ...(args[1] ? { reason: args[1] } : {}) });
    } else if (name === "mode") {
      await request("mode", { room: needRoom(), change: args[0], ...(args[1] ? { nick: args[1] } : {}) });
    }
  }

  // The answer to /rooms: one line per room, its name a button that joins it.
  function showRooms(reply) {
    const rooms = reply.rooms || [];
    if (!rooms.length) notice("no rooms yet: /join one");
    for (const { room, members } of rooms) {
      const line = el("div", "line notice room-entry");
      const button = el("button", "link", room);
      button.type = "button";
      button.addEventListener("click", () => runLine("/join " + room));
      line.append(button, ` ${members} member${members === 1 ? "" : "s"}`);
      show(currentLog(), line);
    }
    if (reply.more) notice(`more rooms: /rooms ${rooms[rooms.length - 1].room}`);
  }

  // -- the page ------------------------------------------------------------------------------

  function startSession(event) {
    event.preventDefault();
    const nick = ui.nick.value.trim();
    if (!nick) return;
    const password = ui.password.value;
    if (ui.register.checked && !ui.registerChoice.hidden && !password) {
      ui.loginError.textContent = "choose a password to register the nick with";
      ui.password.focus();
      return;
    }
    for (const name of [...state.rooms.keys()]) removeRoom(name);
    state.nick = nick;
    state.token = ui.token.value || null;
    state.login = password ? { account: nick, password } : null;
    state.account = null;
    state.signingUp = ui.register.checked && !ui.registerChoice.hidden;
    state.registered = false;
    state.stopped = false;
    state.backoff = FIRST_BACKOFF;
    ui.loginError.textContent = "";
    ui.connect.disabled = true;
    connect();
  }

  async function submitLine(event) {
    event.preventDefault();
    const line = ui.say.value;
    ui.say.value = "";
    const ok = await runLine(line);
    if (!ok && !ui.say.value && parse(line) && !parse(line).error) ui.say.value = line; // let them retry
  }

  function init() {
    state.system = el("div", "log");
    state.system.dataset.room = "";
    ui.messages.append(state.system);
    ui.nick.value = localStorage.getItem("gchat.nick") || "";
    ui.loginForm.addEventListener("submit", startSession);
    ui.register.addEventListener("change", () => {
      // A password manager offers to save a new password, or fills in the known one.
      ui.password.autocomplete = ui.register.checked ? "new-password" : "current-password";
    });
    ui.sayForm.addEventListener("submit", submitLine);
    ui.joinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const room = ui.joinRoom.value.trim();
      ui.joinRoom.value = "";
      if (room) runLine("/join " + room).then(closeSidebar);
    });
    ui.listRooms.addEventListener("click", () => {
      runLine("/rooms");
      closeSidebar();
    });
    ui.roomsToggle.addEventListener("click", () => {
      const open = ui.app.classList.toggle("sidebar-open");
      ui.roomsToggle.setAttribute("aria-expanded", String(open));
    });
    ui.nick.focus();
  }

  init();
})();
