/* Client sessions on one epoll loop, for the three doors gchat has.
 *
 * Strategy: every socket is non-blocking and level-triggered. A readable session is
 * read once into one shared buffer (what was left of its last line or frame is copied
 * in front first), and its complete lines or frames are handled in place; only a
 * partial tail is kept per session, so 10,000 idle sessions hold no buffers. Output is
 * appended to the session's buffer and written once at the end of the loop's turn
 * (one send per session per turn, whatever the turn queued); what the socket does not
 * take waits for EPOLLOUT.
 *
 * Doors:
 * - JSON (PROTOCOL.md 1): one JSON object per line. A server frame is recognised by
 *   its first bytes (`{"op":"msg"`, `{"op":"ok"`...): gchat and the baselines write
 *   `op` first, compactly, as the Python load also relies on. A msg's text is found
 *   by `"text":"` (a benchmark text has no quote or escape in it).
 * - IRC (docs/irc.md): NICK, USER and one JOIN of the rooms' channels (room `x` is
 *   `&x`); set up once 001 and every JOIN's 366 arrived; PONG to each PING.
 * - WebSocket (RFC 6455, gchat's /ws): the HTTP upgrade, then each request is one
 *   masked text frame (client frames must be masked, 5.3) and each server text frame
 *   one JSON frame; PONG to a ping frame, a close frame ends the session.
 * Replies come in request order (PROTOCOL.md 2), so requests wait in a FIFO. */
#define _GNU_SOURCE
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int g_epoll = -1;
const char *g_host = "127.0.0.1";
size_t g_padding = 64;

static char *g_in;          /* the shared read buffer */
static size_t g_in_cap;
static struct sess **g_dirty; /* sessions with output queued this turn */
static size_t g_ndirty, g_dirty_cap;
static uint32_t g_random = 2463534242u;

#define READ_SIZE 65536

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* Python's time.monotonic_ns(): one clock */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t random32(void)
{
    uint32_t x = g_random; /* xorshift32: masking keys need no more (RFC 6455 10.3) */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return g_random = x;
}

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    p = realloc(p, n * size);
    if (p == NULL) {
        fputs("gchat-load: out of memory\n", stderr);
        exit(1);
    }
    *cap = n;
    return p;
}

/* -- output ---------------------------------------------------------------------- */

static void mark_dirty(struct sess *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    g_dirty = grow(g_dirty, &g_dirty_cap, g_ndirty + 1, sizeof *g_dirty);
    g_dirty[g_ndirty++] = s;
}

static void out_add(struct sess *s, const void *data, size_t n)
{
    if (s->state == S_CLOSED)
        return;
    s->out = grow(s->out, &s->ocap, s->olen + n, 1);
    memcpy(s->out + s->olen, data, n);
    s->olen += n;
    mark_dirty(s);
}

/* A masked client frame with `opcode` holding `payload` (RFC 6455 5.2). */
static void ws_frame(struct sess *s, int opcode, const char *payload, size_t n)
{
    uint8_t head[14];
    size_t h = 0;
    head[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        head[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = (uint8_t)(n >> 8);
        head[h++] = (uint8_t)n;
    } else {
        head[h++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            head[h++] = (uint8_t)((uint64_t)n >> shift);
    }
    uint32_t key = random32();
    uint8_t mask[4];
    memcpy(mask, &key, 4);
    memcpy(head + h, mask, 4);
    h += 4;
    out_add(s, head, h);
    if (s->state == S_CLOSED)
        return;
    s->out = grow(s->out, &s->ocap, s->olen + n, 1);
    char *to = s->out + s->olen;
    for (size_t i = 0; i < n; i++)
        to[i] = (char)(payload[i] ^ mask[i & 3]);
    s->olen += n;
}

static void lost(struct sess *s, const char *why);

static void set_epollout(struct sess *s, bool on)
{
    if (s->epollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = s};
    epoll_ctl(g_epoll, EPOLL_CTL_MOD, s->fd, &ev);
    s->epollout = on;
}

static void flush(struct sess *s)
{
    if (s->state == S_CLOSED || s->state == S_CONNECTING || s->state == S_IDLE)
        return;
    size_t done = 0;
    while (done < s->olen) {
        ssize_t n = send(s->fd, s->out + done, s->olen - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            lost(s, strerror(errno));
            return;
        }
        done += (size_t)n;
    }
    memmove(s->out, s->out + done, s->olen - done);
    s->olen -= done;
    set_epollout(s, s->olen > 0);
}

void sess_flush_dirty(void)
{
    /* A flush may queue nothing new, so the list cannot grow while it is walked. */
    for (size_t i = 0; i < g_ndirty; i++) {
        g_dirty[i]->dirty = false;
        flush(g_dirty[i]);
    }
    g_ndirty = 0;
}

/* -- requests -------------------------------------------------------------------- */

static void push_pend(struct sess *s, enum pend_kind kind, int32_t room)
{
    if (s->pcount == s->pcap) { /* grow the ring, unrolled to start at 0 */
        uint32_t cap = s->pcap ? s->pcap * 2 : 4;
        struct pend *q = malloc(cap * sizeof *q);
        if (q == NULL) {
            fputs("gchat-load: out of memory\n", stderr);
            exit(1);
        }
        for (uint32_t i = 0; i < s->pcount; i++)
            q[i] = s->pq[(s->phead + i) % s->pcap];
        free(s->pq);
        s->pq = q;
        s->pcap = cap;
        s->phead = 0;
    }
    s->pq[(s->phead + s->pcount) % s->pcap] = (struct pend){now_ns(), room, (uint8_t)kind};
    s->pcount++;
}

static bool pop_pend(struct sess *s, struct pend *out)
{
    if (s->pcount == 0)
        return false;
    *out = s->pq[s->phead];
    s->phead = (s->phead + 1) % s->pcap;
    s->pcount--;
    return true;
}

/* Send {"op":OP,"id":N<fields>} (fields start with a comma, or are empty). */
static void request(struct sess *s, enum pend_kind kind, int32_t room, const char *op,
                    const char *fields)
{
    char frame[1024];
    int n = snprintf(frame, sizeof frame, "{\"op\":\"%s\",\"id\":%llu%s}\n", op,
                     (unsigned long long)++s->next_id, fields);
    if (n < 0 || (size_t)n >= sizeof frame) {
        fputs("gchat-load: request too long\n", stderr);
        exit(1);
    }
    push_pend(s, kind, room);
    if (s->transport == T_WS)
        ws_frame(s, 1, frame, (size_t)n - 1); /* a WebSocket message has no LF */
    else
        out_add(s, frame, (size_t)n);
}

void sess_say(struct sess *s, int32_t room, const char *text)
{
    char fields[768];
    snprintf(fields, sizeof fields, ",\"room\":\"%s\",\"text\":\"%s\"", room_name(room), text);
    request(s, P_SAY, room, "say", fields);
}

void sess_ping(struct sess *s)
{
    if (s->transport == T_IRC) {
        char line[64];
        int n = snprintf(line, sizeof line, "PING bench%llu\r\n", (unsigned long long)++s->next_id);
        push_pend(s, P_PING, -1);
        out_add(s, line, (size_t)n);
    } else {
        request(s, P_PING, -1, "ping", "");
    }
}

/* -- setting up ------------------------------------------------------------------ */

void sess_init(struct sess *s, enum transport t, int port, const char *nick, int nrooms,
               const int32_t *rooms)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->transport = (uint8_t)t;
    s->state = S_IDLE;
    s->port = port;
    snprintf(s->nick, sizeof s->nick, "%s", nick);
    s->nrooms = nrooms;
    if (nrooms) {
        s->rooms = malloc((size_t)nrooms * sizeof *rooms);
        if (s->rooms == NULL)
            exit(1);
        memcpy(s->rooms, rooms, (size_t)nrooms * sizeof *rooms);
    }
}

/* Register and join, pipelined as the protocol allows: one round trip. */
static void send_setup(struct sess *s)
{
    s->state = S_SETUP;
    s->setup_left = 1 + s->nrooms;
    char fields[128];
    if (s->transport == T_IRC) {
        char line[4096];
        int n = snprintf(line, sizeof line, "NICK %s\r\nUSER %s 0 * %s\r\n", s->nick, s->nick, s->nick);
        out_add(s, line, (size_t)n);
        if (s->nrooms) {
            n = snprintf(line, sizeof line, "JOIN ");
            for (int i = 0; i < s->nrooms; i++) {
                const char *room = room_name(s->rooms[i]);
                n += snprintf(line + n, sizeof line - (size_t)n, "%s%s%s", i ? "," : "",
                              room[0] == '#' ? "" : "&", room);
            }
            n += snprintf(line + n, sizeof line - (size_t)n, "\r\n");
            if ((size_t)n >= sizeof line) {
                fputs("gchat-load: too many rooms for one JOIN\n", stderr);
                exit(1);
            }
            out_add(s, line, (size_t)n);
        }
        return;
    }
    snprintf(fields, sizeof fields, ",\"nick\":\"%s\"", s->nick);
    request(s, P_SETUP, -1, "hello", fields);
    for (int i = 0; i < s->nrooms; i++) {
        snprintf(fields, sizeof fields, ",\"room\":\"%s\"", room_name(s->rooms[i]));
        request(s, P_SETUP, s->rooms[i], "join", fields);
    }
}

static void connected(struct sess *s)
{
    if (s->transport != T_WS) {
        send_setup(s);
        return;
    }
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t nonce[18] = {0}; /* 16 random bytes, base64: 24 characters (RFC 6455 4.1) */
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = random32();
        memcpy(nonce + i, &r, 4);
    }
    char key[25];
    for (int i = 0, k = 0; i < 18; i += 3) {
        uint32_t v = (uint32_t)nonce[i] << 16 | (uint32_t)nonce[i + 1] << 8 | nonce[i + 2];
        key[k++] = alphabet[v >> 18 & 63];
        key[k++] = alphabet[v >> 12 & 63];
        key[k++] = alphabet[v >> 6 & 63];
        key[k++] = alphabet[v & 63];
    }
    key[22] = key[23] = '=';
    key[24] = '\0';
    char head[512];
    int n = snprintf(head, sizeof head,
                     "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     g_host, s->port, key);
    s->state = S_HANDSHAKE;
    out_add(s, head, (size_t)n);
}

void sess_start(struct sess *s)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    s->setup_started = now_ns();
    if (inet_pton(AF_INET, g_host, &addr.sin_addr) != 1) {
        on_setup_failed(s, "the host must be an IPv4 address");
        return;
    }
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        char why[128];
        snprintf(why, sizeof why, "socket: %s", strerror(errno));
        s->state = S_CLOSED;
        on_setup_failed(s, why);
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->state = S_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = s};
    epoll_ctl(g_epoll, EPOLL_CTL_ADD, s->fd, &ev);
    s->epollout = true;
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        connected(s);
    } else if (errno != EINPROGRESS) {
        char why[128];
        snprintf(why, sizeof why, "connect to %s:%d: %s", g_host, s->port, strerror(errno));
        lost(s, why);
    }
}

static void setup_step(struct sess *s)
{
    if (s->state == S_SETUP && --s->setup_left == 0) {
        s->state = S_READY;
        on_setup_done(s);
    }
}

/* -- closing --------------------------------------------------------------------- */

void sess_close(struct sess *s)
{
    if (s->state == S_CLOSED)
        return;
    if (s->fd >= 0)
        close(s->fd); /* also leaves the epoll set */
    s->fd = -1;
    s->state = S_CLOSED;
    free(s->out);
    free(s->rem);
    free(s->frag);
    s->out = s->rem = s->frag = NULL;
    s->olen = s->ocap = s->rlen = s->rcap = s->flen = s->fcap = 0;
}

static void lost(struct sess *s, const char *why)
{
    if (s->state == S_CLOSED)
        return;
    bool setting_up = s->state != S_READY;
    sess_close(s);
    if (setting_up) {
        char message[256];
        snprintf(message, sizeof message, "%s: connection lost while setting up (%s)", s->nick, why);
        on_setup_failed(s, message);
    } else {
        on_lost(s, why);
    }
}

/* -- input ----------------------------------------------------------------------- */

/* The value of "key":"..." in a JSON frame, for messages (at most cap - 1 bytes). */
static void field(const char *line, size_t n, const char *key, char *out, size_t cap)
{
    char pattern[32];
    int k = snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *at = memmem(line, n, pattern, (size_t)k);
    out[0] = '\0';
    if (at == NULL)
        return;
    at += k;
    const char *end = memchr(at, '"', (size_t)(line + n - at));
    size_t len = end ? (size_t)(end - at) : 0;
    if (len >= cap)
        len = cap - 1;
    memcpy(out, at, len);
    out[len] = '\0';
}

static void reply(struct sess *s, bool ok, const char *line, size_t n, int64_t now)
{
    struct pend pend;
    if (!pop_pend(s, &pend))
        return; /* nothing asked: not ours to count */
    if (pend.kind != P_SETUP) {
        on_reply(s, pend, ok, line, n, now);
        return;
    }
    if (!ok) {
        char code[64], text[128], why[320];
        field(line, n, "code", code, sizeof code);
        field(line, n, "message", text, sizeof text);
        snprintf(why, sizeof why, "setting up %s failed: %s: %s", s->nick, code, text);
        on_setup_failed(s, why);
        return;
    }
    setup_step(s);
}

/* Just after the first `pattern` (`n` bytes) in [p, end), or NULL. glibc's memmem
 * prepares a general search on each call, which costs more than these short lines
 * take: this looks for the pattern's byte `key` (one that is rare in the line before
 * the pattern) with memchr and compares around it. */
static const char *find_after(const char *p, const char *end, const char *pattern, size_t n, size_t key)
{
    const char *q = p + key;
    while (q < end && (q = memchr(q, pattern[key], (size_t)(end - q))) != NULL) {
        if (q + (n - key) <= end && memcmp(q - key, pattern, n) == 0)
            return q - key + n;
        q++;
    }
    return NULL;
}

#define HAS(p, n, lit) ((n) >= sizeof(lit) - 1 && memcmp((p), (lit), sizeof(lit) - 1) == 0)

/* One JSON frame (a line without its LF, or a WebSocket message). */
static void json_frame(struct sess *s, const char *p, size_t n, int64_t now)
{
    if (!HAS(p, n, "{\"op\":\""))
        return;
    const char *op = p + 7;
    size_t rest = n - 7;
    if (HAS(op, rest, "msg\"")) {
        s->msgs++;
        if (!s->checking) {
            on_msg(s, NULL, 0, now);
            return;
        }
        const char *text = find_after(p + 11, p + n, "\"text\":\"", 8, 3);
        if (text == NULL) {
            on_msg(s, NULL, 0, now);
            return;
        }
        const char *end = memchr(text, '"', (size_t)(p + n - text));
        on_msg(s, text, end ? (size_t)(end - text) : 0, now);
    } else if (HAS(op, rest, "ok\"")) {
        reply(s, true, p, n, now);
    } else if (HAS(op, rest, "error\"")) {
        reply(s, false, p, n, now);
    } else if (HAS(op, rest, "ping\"")) {
        if (s->transport == T_WS)
            ws_frame(s, 1, "{\"op\":\"pong\"}", 13);
        else
            out_add(s, "{\"op\":\"pong\"}\n", 14);
    }
    /* presence, whisper, bye (the close follows): nothing to do */
}

static bool irc_is(const char *cmd, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n == k && memcmp(cmd, name, k) == 0;
}

/* One IRC line without its CR LF. */
static void irc_line(struct sess *s, const char *p, size_t n, int64_t now)
{
    const char *end = p + n, *cmd = p;
    if (n == 0)
        return;
    if (*cmd == '@') { /* tags: none without capabilities, but skip them anyway */
        cmd = memchr(cmd, ' ', n);
        if (cmd == NULL)
            return;
        cmd++;
    }
    if (cmd < end && *cmd == ':') {
        const char *space = memchr(cmd, ' ', (size_t)(end - cmd));
        if (space == NULL)
            return;
        cmd = space + 1;
        if (HAS(cmd, (size_t)(end - cmd), "PRIVMSG ")) { /* the hot path: no more parsing */
            s->msgs++;
            const char *text = s->checking ? find_after(cmd + 8, end, " :", 2, 1) : NULL;
            if (text)
                on_msg(s, text, (size_t)(end - text), now);
            else
                on_msg(s, NULL, 0, now);
            return;
        }
    }
    const char *cmd_end = memchr(cmd, ' ', (size_t)(end - cmd));
    if (cmd_end == NULL)
        cmd_end = end;
    size_t clen = (size_t)(cmd_end - cmd);
    const char *params = cmd_end < end ? cmd_end + 1 : end;
    /* the last parameter: after " :", else the last word */
    const char *last = NULL;
    if (params < end && *params == ':')
        last = params + 1;
    else if (params < end) {
        const char *colon = memmem(params, (size_t)(end - params), " :", 2);
        if (colon)
            last = colon + 2;
        else {
            last = end;
            while (last > params && last[-1] != ' ')
                last--;
        }
    }
    if (irc_is(cmd, clen, "PING")) {
        char line[600];
        const char *first = params < end && *params == ':' ? params + 1 : params;
        const char *first_end = memchr(first, ' ', (size_t)(end - first));
        if (first == params + 1 || first_end == NULL)
            first_end = end;
        int k = snprintf(line, sizeof line, "PONG :%.*s\r\n", (int)(first_end - first), first);
        out_add(s, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
    } else if (irc_is(cmd, clen, "PONG")) {
        reply(s, true, last ? last : params, last ? (size_t)(end - last) : 0, now);
    } else if (irc_is(cmd, clen, "001") || irc_is(cmd, clen, "366")) {
        setup_step(s);
    } else if (s->state == S_SETUP &&
               (irc_is(cmd, clen, "ERROR") || irc_is(cmd, clen, "432") || irc_is(cmd, clen, "433") ||
                irc_is(cmd, clen, "451") || irc_is(cmd, clen, "461") || irc_is(cmd, clen, "464") ||
                irc_is(cmd, clen, "403") || irc_is(cmd, clen, "405") || irc_is(cmd, clen, "479"))) {
        char why[320];
        snprintf(why, sizeof why, "setting up %s failed: %.*s", s->nick, (int)(end - cmd), cmd);
        on_setup_failed(s, why);
    }
}

/* Handles the complete lines in buf; how many bytes they took. */
static size_t lines(struct sess *s, const char *buf, size_t len, int64_t now)
{
    const char *p = buf, *end = buf + len;
    while (p < end && s->state != S_CLOSED) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - p);
        if (s->transport == T_IRC) {
            if (n && p[n - 1] == '\r')
                n--;
            irc_line(s, p, n, now);
        } else {
            json_frame(s, p, n, now);
        }
        p = nl + 1;
    }
    return (size_t)(p - buf);
}

/* Handles the complete WebSocket frames in buf; how many bytes they took. */
static size_t frames(struct sess *s, const char *buf, size_t len, int64_t now)
{
    size_t off = 0;
    while (len - off >= 2 && s->state != S_CLOSED) {
        const uint8_t *h = (const uint8_t *)buf + off;
        size_t head = 2;
        uint64_t size = h[1] & 0x7f;
        if (size == 126) {
            if (len - off < 4)
                break;
            size = (uint64_t)h[2] << 8 | h[3];
            head = 4;
        } else if (size == 127) {
            if (len - off < 10)
                break;
            size = 0;
            for (int i = 2; i < 10; i++)
                size = size << 8 | h[i];
            head = 10;
        }
        if (h[1] & 0x80) { /* a server never masks (RFC 6455 5.1) */
            lost(s, "a masked frame from the server");
            break;
        }
        if (len - off - head < size)
            break;
        const char *payload = buf + off + head;
        int opcode = h[0] & 0x0f;
        bool fin = h[0] & 0x80;
        off += head + size;
        if (opcode == 1 && fin) {
            json_frame(s, payload, size, now);
        } else if (opcode == 1 || opcode == 0) { /* a fragmented message: gather it */
            if (opcode == 1)
                s->flen = 0;
            s->frag = grow(s->frag, &s->fcap, s->flen + size, 1);
            memcpy(s->frag + s->flen, payload, size);
            s->flen += size;
            if (fin) {
                json_frame(s, s->frag, s->flen, now);
                s->flen = 0;
            }
        } else if (opcode == 8) {
            lost(s, "the server closed the WebSocket");
        } else if (opcode == 9) {
            ws_frame(s, 10, payload, size);
        }
    }
    return off;
}

/* The HTTP answer to the upgrade, then frames. */
static size_t handshake(struct sess *s, const char *buf, size_t len, int64_t now)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len > 16384)
            lost(s, "no end to the HTTP answer");
        return 0;
    }
    if (!HAS(buf, len, "HTTP/1.1 101 ")) {
        const char *eol = memchr(buf, '\r', len);
        int shown = eol ? (int)(eol - buf) : 0;
        char why[200];
        snprintf(why, sizeof why, "the WebSocket upgrade was refused: %.*s", shown > 150 ? 150 : shown, buf);
        lost(s, why);
        return len;
    }
    send_setup(s);
    size_t used = (size_t)(end + 4 - buf);
    return used + frames(s, buf + used, len - used, now);
}

static void read_some(struct sess *s)
{
    g_in = grow(g_in, &g_in_cap, s->rlen + READ_SIZE, 1);
    if (s->rlen)
        memcpy(g_in, s->rem, s->rlen);
    ssize_t got = recv(s->fd, g_in + s->rlen, g_in_cap - s->rlen, 0);
    if (got == 0) {
        lost(s, "closed by the server");
        return;
    }
    if (got < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            lost(s, strerror(errno));
        return;
    }
    size_t len = s->rlen + (size_t)got, used;
    int64_t now = now_ns(); /* one receive time for what this read brought */
    if (s->state == S_HANDSHAKE)
        used = handshake(s, g_in, len, now);
    else if (s->transport == T_WS)
        used = frames(s, g_in, len, now);
    else
        used = lines(s, g_in, len, now);
    if (s->state == S_CLOSED)
        return;
    s->rlen = len - used;
    if (s->rlen) {
        s->rem = grow(s->rem, &s->rcap, s->rlen, 1);
        memcpy(s->rem, g_in + used, s->rlen);
    } else if (s->rcap > 4096) { /* a big frame went by: do not keep its room */
        free(s->rem);
        s->rem = NULL;
        s->rcap = 0;
    }
}

void sess_on_event(struct sess *s, uint32_t events)
{
    if (s->state == S_CONNECTING) {
        int error = 0;
        socklen_t size = sizeof error;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &error, &size);
        if (error) {
            char why[128];
            snprintf(why, sizeof why, "connect to %s:%d: %s", g_host, s->port, strerror(error));
            lost(s, why);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN)))
            return;
        connected(s);
        flush(s);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        read_some(s);
    if ((events & EPOLLOUT) && s->state != S_CLOSED)
        flush(s);
}
