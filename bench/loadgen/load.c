/* gchat-load: the benchmark's load generator in C, one epoll thread.
 *
 * It is a drop-in for a Python load process (gchat/bench/load.py): the runner starts
 * it, and they talk over stdin and stdout one JSON object per line, the same lines in
 * the same order. The runner sends the job (the scenario and its sizes, the ports, this
 * process's number among `procs`); the process connects, registers and joins its share
 * of the sessions and answers {"event":"ready"}; on {"duration":D} it measures and
 * answers {"event":"measured",...}; for fan-out and many-rooms the runner then sends
 * every process's acknowledged says ({"acked_rooms":{...}}), the process waits (at most
 * 10 s) until they all reached its subscribers and answers {"event":"result",...}.
 * A server that cannot keep up answers {"event":"timed_out",...}; one that refuses or
 * drops a session {"event":"failed",...}.
 *
 * The scenarios, their sessions, nicks, rooms, texts and checks are the Python load's:
 * - fan-out: subscribers in room "fan" and publishers each keeping `window` says in
 *   flight until the window ends; deliveries counted up to then.
 * - many-rooms: `rooms` rooms of `subscribers_per_room`; publishers, each owning the
 *   rooms p, p + publishers, ..., say in turn at a fixed total `rate`.
 * - ping-pong: rooms of a publisher and a receiver; one say in flight; its round trip.
 * - idle: sessions registered and joined (`concurrency` 500 at a time), held while a
 *   probe (process 0) pings every 50 ms.
 * A say's text is the send time (CLOCK_MONOTONIC, the clock of Python's
 * time.monotonic_ns()), then `sender:seq`, padded with x to `padding` characters. A
 * subscriber checks each text: the sender's seq must be the last one plus 1 (else a
 * seq gap: something lost, repeated or out of order) and the latency goes into a
 * histogram; every many-rooms subscriber checks, and the first fan-out subscriber of
 * each process (the others count, as in the Python load). Lost = expected - delivered,
 * expected being every acknowledged say times its room's subscribers. ping-pong's
 * receivers count what they get too (expected: the says acknowledged).
 *
 * Extensions the runner reads: "load":"c", and "latency_hist_us" (pairs of latency in
 * microseconds and count: exact below 65,536 us, within 1/2048 above) instead of the
 * Python load's list of every latency. */
#define _GNU_SOURCE
#include "jscan.h"
#include "loadgen.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000LL
#define REPLY_TIMEOUT_S 30    /* a request's reply while measuring (load.REPLY_TIMEOUT) */
#define FINISH_TIMEOUT_S 10   /* every acknowledged say delivered (load.py's finish); the
                                 job's "finish_timeout" changes it */
#define CHECK_EVERY_NS (NS / 10)

enum scenario { SC_FANOUT, SC_MANYROOMS, SC_PINGPONG, SC_IDLE };
enum phase { PH_SETUP, PH_READY, PH_MEASURE, PH_MEASURED, PH_FINISH };

static struct {
    enum scenario scenario;
    enum transport transport;
    int ports[16], nports, door_ports[16], ndoor_ports;
    long proc, procs;
    double setup_timeout, finish_timeout;
    long subscribers, publishers, window, rooms, per_room, rate, sessions;
} J = {.procs = 1, .setup_timeout = 30, .finish_timeout = FINISH_TIMEOUT_S};

/* -- output to the runner -------------------------------------------------------- */

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void event_failed(const char *why)
{
    printf("{\"event\":\"failed\",\"error\":");
    json_string(why);
    printf("}\n");
    fflush(stdout);
    exit(1);
}

static void event_measure_timed_out(const char *why)
{
    printf("{\"event\":\"timed_out\",\"phase\":\"measure\",\"error\":");
    json_string(why);
    printf("}\n");
    fflush(stdout);
    exit(0);
}

static double cpu_seconds(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
           (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
}

/* -- the latency histogram ------------------------------------------------------- */

#define EXACT 65536
#define SUB 2048 /* buckets per power of two above EXACT */
static uint64_t g_hist[EXACT + 48 * SUB];

static void hist_add(int64_t us)
{
    if (us < 0)
        us = 0;
    if (us < EXACT) {
        g_hist[us]++;
        return;
    }
    int e = 63 - __builtin_clzll((unsigned long long)us); /* 16.. */
    uint64_t m = (uint64_t)us >> (e - 11);                /* SUB..2 SUB - 1 */
    g_hist[EXACT + (size_t)(e - 16) * SUB + (m - SUB)]++;
}

static uint64_t hist_value(size_t i)
{
    if (i < EXACT)
        return i;
    size_t j = i - EXACT;
    return (uint64_t)(j % SUB + SUB) << (j / SUB + 16 - 11);
}

/* -- rooms and sessions ---------------------------------------------------------- */

const char *room_name(int32_t room)
{
    static char name[32];
    if (J.scenario == SC_FANOUT)
        return "fan";
    snprintf(name, sizeof name, "room%d", (int)room);
    return name;
}

/* The sessions set up together, as one connect_all of the Python load. */
struct group {
    struct sess *s;
    int n, started, done, low; /* low: below it, every session is set up */
    int concurrency;
};
static struct group g_groups[2];
static int g_ngroups, g_current;

struct pub {          /* a publisher's state */
    long number;      /* its global number: nick p<number> */
    int in_flight;
    bool done;
    uint64_t seq;     /* fan-out: its says so far */
    int turn;         /* many-rooms: which of its rooms is next */
    int64_t next_at;  /* many-rooms: when its next say is due */
    char text[256];   /* ping-pong: the text it says again and again */
};
static struct pub *g_pubs;
static struct sess *g_pub_sessions;
static int g_npubs;
static struct sess *g_subs; /* subscribers, receivers or idle sessions */
static int g_nsubs;
static uint32_t *g_last;    /* per checking subscriber, the last seq of each publisher */
static uint32_t *g_room_subs; /* many-rooms: this process's subscribers of each room */
static struct sess g_probe;
static bool g_probing;

static enum phase g_phase = PH_SETUP;
static int g_planned, g_set_up;
static int64_t g_setup_started, g_go, g_next_check;
static double g_setup_cpu, g_setup_s, g_cpu_go, g_cpu_s, g_elapsed;

/* the figures */
static uint64_t g_delivered, g_deliveries, g_acked, g_failed, g_gaps, g_expected;
static uint64_t *g_acked_rooms; /* per room (many-rooms), or [0] for "fan" */
static uint32_t *g_room_seq;    /* many-rooms: each room's seq of says (one publisher each) */
static int64_t g_deadline, g_finish_deadline, g_next_ping;
static int g_pubs_done, g_pending;
static bool g_sending;
static int *g_order, g_cursor;  /* many-rooms: publishers in the order they say */
static int64_t g_interval;

static void stamp(char *out, size_t cap, const char *tag)
{
    int n = tag ? snprintf(out, cap, "%lld %s", (long long)now_ns(), tag)
                : snprintf(out, cap, "%lld", (long long)now_ns());
    size_t len = (size_t)n;
    if (len + 1 < g_padding && g_padding < cap) {
        out[len++] = ' ';
        while (len < g_padding)
            out[len++] = 'x';
        out[len] = '\0';
    } else if (len + 1 < cap) {
        out[len++] = ' '; /* Python's stamp adds the space even with no padding left */
        out[len] = '\0';
    }
}

static void group_add(struct group *g, int count, int concurrency)
{
    g->s = calloc((size_t)(count ? count : 1), sizeof *g->s);
    g->n = count;
    g->concurrency = concurrency;
    g_planned += count;
}

/* Session `position` of `g`: its port is taken round robin over `ports` (cluster
 * nodes) from `offset`, as connect_all does. */
static void group_session(struct group *g, int position, enum transport t, const int *ports,
                          int nports, int offset, const char *nick, int nrooms, const int32_t *rooms)
{
    sess_init(&g->s[position], t, ports[(position + offset) % nports], nick, nrooms, rooms);
}

static long mine_count(long count)
{
    return count > J.proc ? (count - J.proc + J.procs - 1) / J.procs : 0;
}

static void build(void)
{
    const int *sub_ports = J.transport == T_JSON ? J.ports : J.door_ports;
    int nsub_ports = J.transport == T_JSON ? J.nports : J.ndoor_ports;
    char nick[24];
    int32_t room;
    long nsubs = 0, npubs = 0;
    switch (J.scenario) {
    case SC_FANOUT:
        nsubs = mine_count(J.subscribers);
        npubs = mine_count(J.publishers);
        break;
    case SC_MANYROOMS:
        nsubs = mine_count(J.rooms * J.per_room);
        npubs = mine_count(J.publishers);
        break;
    case SC_PINGPONG:
        nsubs = npubs = mine_count(J.rooms);
        break;
    case SC_IDLE:
        nsubs = mine_count(J.sessions);
        break;
    }
    struct group *subs, *pubs = NULL;
    if (J.scenario == SC_PINGPONG) { /* publishers first, as the Python load does */
        pubs = &g_groups[0];
        subs = &g_groups[1];
        g_ngroups = 2;
    } else {
        subs = &g_groups[0];
        if (npubs || J.scenario != SC_IDLE)
            pubs = &g_groups[1];
        g_ngroups = J.scenario == SC_IDLE ? 1 : 2;
    }
    group_add(subs, (int)nsubs, J.scenario == SC_IDLE ? 500 : 200);
    for (long k = 0, i = J.proc; k < nsubs; k++, i += J.procs) {
        const char *prefix = J.scenario == SC_PINGPONG ? "r" : J.scenario == SC_IDLE ? "i" : "s";
        snprintf(nick, sizeof nick, "%s%ld", prefix, i);
        room = J.scenario == SC_FANOUT ? 0 : J.scenario == SC_PINGPONG ? (int32_t)i
                                                                      : (int32_t)(i % J.rooms);
        /* ping-pong: on a cluster, each pair spans two nodes (offset 1) */
        group_session(subs, (int)k, J.transport, sub_ports, nsub_ports,
                      J.scenario == SC_PINGPONG ? 1 : 0, nick, 1, &room);
        subs->s[k].subscriber = true;
        /* fan-out: the first subscriber of each process checks, the others count (as in
         * the Python load; checking all 1,000 would be a fifth of this load's CPU) */
        subs->s[k].checking = J.scenario == SC_MANYROOMS || (J.scenario == SC_FANOUT && k == 0);
    }
    g_subs = subs->s;
    g_nsubs = (int)nsubs;
    if (pubs == NULL)
        return;
    group_add(pubs, (int)npubs, 200);
    g_pubs = calloc((size_t)(npubs ? npubs : 1), sizeof *g_pubs);
    g_pub_sessions = pubs->s;
    g_npubs = (int)npubs;
    int32_t *rooms = calloc((size_t)(J.rooms > 1 ? J.rooms : 1), sizeof *rooms);
    for (long k = 0, p = J.proc; k < npubs; k++, p += J.procs) {
        int nrooms = 0;
        if (J.scenario == SC_MANYROOMS)
            for (long r = p; r < J.rooms; r += J.publishers)
                rooms[nrooms++] = (int32_t)r;
        else
            rooms[nrooms++] = J.scenario == SC_PINGPONG ? (int32_t)p : 0;
        snprintf(nick, sizeof nick, "p%ld", p);
        group_session(pubs, (int)k, T_JSON, J.ports, J.nports, 0, nick, nrooms, rooms);
        pubs->s[k].user = &g_pubs[k];
        g_pubs[k].number = p;
    }
    free(rooms);
    if (J.scenario == SC_FANOUT || J.scenario == SC_MANYROOMS) {
        g_last = calloc((size_t)(nsubs ? nsubs : 1) * (size_t)(J.publishers ? J.publishers : 1),
                        sizeof *g_last);
        for (long k = 0; k < nsubs; k++)
            g_subs[k].user = g_last + k * J.publishers;
    }
    if (J.scenario == SC_MANYROOMS) {
        g_acked_rooms = calloc((size_t)J.rooms, sizeof *g_acked_rooms);
        g_room_seq = calloc((size_t)J.rooms, sizeof *g_room_seq);
        g_room_subs = calloc((size_t)J.rooms, sizeof *g_room_subs);
        for (long k = 0; k < nsubs; k++)
            g_room_subs[g_subs[k].rooms[0]]++;
    } else {
        g_acked_rooms = calloc(1, sizeof *g_acked_rooms);
    }
}

/* -- setting up ------------------------------------------------------------------ */

static void setup_finished(void)
{
    g_setup_s = (double)(now_ns() - g_setup_started) / NS;
    g_setup_cpu = cpu_seconds() - g_setup_cpu;
    g_phase = PH_READY;
    printf("{\"event\":\"ready\",\"sessions\":%d}\n", g_planned);
    fflush(stdout);
}

/* Start sessions while the current group has room under its concurrency. */
static void pump(void)
{
    while (g_current < g_ngroups) {
        struct group *g = &g_groups[g_current];
        while (g->started < g->n && g->started - g->done < g->concurrency)
            sess_start(&g->s[g->started++]);
        if (g->done < g->n)
            return;
        g_current++;
    }
    setup_finished();
}

static void setup_timed_out(void)
{
    printf("{\"event\":\"timed_out\",\"phase\":\"setup\",\"sessions_set_up\":%d,"
           "\"sessions\":%d,\"timeout_s\":%g}\n", g_set_up, g_planned, J.setup_timeout);
    fflush(stdout);
    exit(0);
}

static bool too_late(const struct sess *s, int64_t now)
{
    return now - s->setup_started > (int64_t)(J.setup_timeout * NS);
}

/* Every 100 ms: a session still setting up past the timeout ends the run. */
static void check_setup_timeouts(int64_t now)
{
    struct group *g = &g_groups[g_current];
    while (g->low < g->started && g->s[g->low].state == S_READY)
        g->low++;
    for (int i = g->low; i < g->started; i++)
        if (g->s[i].state != S_READY && too_late(&g->s[i], now))
            setup_timed_out();
}

static void start_probing(void);

void on_setup_done(struct sess *s)
{
    if (s == &g_probe) {
        start_probing();
        return;
    }
    if (too_late(s, now_ns())) /* set up, but later than allowed (between two checks) */
        setup_timed_out();
    g_set_up++;
    g_groups[g_current].done++;
    pump();
}

void on_setup_failed(struct sess *s, const char *why)
{
    (void)s;
    event_failed(why);
}

/* -- measuring ------------------------------------------------------------------- */

static void emit(const char *event, bool final)
{
    printf("{\"event\":\"%s\",\"load\":\"c\",\"elapsed\":%.6f,\"cpu_s\":%.6f,\"setup_cpu_s\":%.6f",
           event, g_elapsed, g_cpu_s, g_setup_cpu);
    switch (J.scenario) {
    case SC_FANOUT:
        printf(",\"deliveries\":%llu,\"says\":%llu,\"failed\":%llu,\"acked_rooms\":{\"fan\":%llu}",
               (unsigned long long)g_deliveries, (unsigned long long)g_acked,
               (unsigned long long)g_failed, (unsigned long long)g_acked);
        break;
    case SC_MANYROOMS: {
        printf(",\"says\":%llu,\"failed\":%llu,\"acked_rooms\":{", (unsigned long long)g_acked,
               (unsigned long long)g_failed);
        const char *comma = "";
        for (long r = 0; r < J.rooms; r++)
            if (g_acked_rooms[r]) {
                printf("%s\"room%ld\":%llu", comma, r, (unsigned long long)g_acked_rooms[r]);
                comma = ",";
            }
        printf("}");
        break;
    }
    case SC_PINGPONG:
        printf(",\"says\":%llu", (unsigned long long)g_acked);
        break;
    case SC_IDLE: {
        int alive = 0;
        for (int i = 0; i < g_nsubs; i++)
            alive += g_subs[i].state == S_READY;
        printf(",\"sessions\":%d,\"alive\":%d,\"setup_s\":%.6f", g_nsubs, alive, g_setup_s);
        break;
    }
    }
    if (final) {
        if (J.scenario != SC_IDLE)
            printf(",\"expected\":%llu,\"delivered\":%llu", (unsigned long long)g_expected,
                   (unsigned long long)g_delivered);
        if (J.scenario == SC_FANOUT || J.scenario == SC_MANYROOMS)
            printf(",\"seq_gaps\":%llu", (unsigned long long)g_gaps);
        printf(",\"latency_hist_us\":[");
        const char *comma = "";
        for (size_t i = 0; i < sizeof g_hist / sizeof *g_hist; i++)
            if (g_hist[i]) {
                printf("%s[%llu,%llu]", comma, (unsigned long long)hist_value(i),
                       (unsigned long long)g_hist[i]);
                comma = ",";
            }
        printf("]");
    }
    printf("}\n");
    fflush(stdout);
}

static void finish_now(void)
{
    emit("result", true);
    exit(0);
}

static void measure_done(void)
{
    int64_t now = now_ns();
    g_elapsed = (double)(now - g_go) / NS;
    g_cpu_s = cpu_seconds() - g_cpu_go;
    g_deliveries = g_delivered; /* fan-out: counted up to the end of the window */
    emit("measured", false);
    if (J.scenario == SC_IDLE)
        finish_now();
    if (J.scenario == SC_PINGPONG) { /* the receivers: every acknowledged say, once */
        g_expected = g_acked;
        g_phase = PH_FINISH;
        g_finish_deadline = now + (int64_t)(J.finish_timeout * NS);
        return;
    }
    g_phase = PH_MEASURED; /* the runner sends every process's acknowledged says */
}

static void publisher_done(struct pub *p)
{
    if (p->done)
        return;
    p->done = true;
    if (++g_pubs_done == g_npubs)
        measure_done();
}

static void fan_say(struct sess *s)
{
    struct pub *p = s->user;
    char tag[48], text[256];
    p->in_flight++;
    snprintf(tag, sizeof tag, "p%ld:%llu", p->number, (unsigned long long)++p->seq);
    stamp(text, sizeof text, tag);
    sess_say(s, 0, text);
}

static void many_say(struct pub *p, struct sess *s)
{
    int32_t room = s->rooms[p->turn++ % s->nrooms];
    char tag[48], text[256];
    snprintf(tag, sizeof tag, "p%ld:%u", p->number, ++g_room_seq[room]);
    stamp(text, sizeof text, tag);
    if (s->state != S_READY) {
        g_failed++; /* a say on a closed session fails at once, as in the Python load */
        return;
    }
    g_pending++;
    sess_say(s, room, text);
}

static int by_next_at(const void *a, const void *b)
{
    int64_t x = g_pubs[*(const int *)a].next_at, y = g_pubs[*(const int *)b].next_at;
    return (x > y) - (x < y);
}

static void many_rooms_tick(int64_t now)
{
    /* Every publisher has the same interval and started within one, so they say in a
     * fixed cyclic order: only the next one in that order can be due. */
    while (g_sending && g_npubs) {
        int k = g_order[g_cursor];
        struct pub *p = &g_pubs[k];
        if (p->next_at >= g_deadline) {
            g_sending = false;
            break;
        }
        if (p->next_at > now)
            return;
        many_say(p, &g_pub_sessions[k]);
        p->next_at += g_interval;
        g_cursor = (g_cursor + 1) % g_npubs;
    }
    if (!g_sending && g_pending == 0 && g_phase == PH_MEASURE)
        measure_done();
}

static void start_probing(void)
{
    g_deadline = now_ns() + (g_deadline - g_go); /* the hold starts once the probe is up */
    sess_ping(&g_probe);
}

static void go(double duration)
{
    int64_t now = now_ns();
    g_phase = PH_MEASURE;
    g_go = now;
    g_cpu_go = cpu_seconds();
    g_delivered = 0;
    g_deadline = now + (int64_t)(duration * NS);
    switch (J.scenario) {
    case SC_FANOUT:
        for (int k = 0; k < g_npubs; k++)
            for (long w = 0; w < J.window; w++)
                fan_say(&g_pub_sessions[k]);
        if (g_npubs == 0)
            measure_done();
        break;
    case SC_MANYROOMS:
        g_interval = (int64_t)((double)J.publishers / (double)J.rate * NS);
        g_order = calloc((size_t)(g_npubs ? g_npubs : 1), sizeof *g_order);
        for (int k = 0; k < g_npubs; k++) { /* spread the starts over one interval */
            g_pubs[k].next_at = now + (int64_t)((double)random() / RAND_MAX * (double)g_interval);
            g_order[k] = k;
        }
        qsort(g_order, (size_t)g_npubs, sizeof *g_order, by_next_at);
        g_sending = true;
        many_rooms_tick(now);
        break;
    case SC_PINGPONG:
        for (int k = 0; k < g_npubs; k++) {
            stamp(g_pubs[k].text, sizeof g_pubs[k].text, NULL);
            g_pubs[k].in_flight = 1;
            sess_say(&g_pub_sessions[k], g_pub_sessions[k].rooms[0], g_pubs[k].text);
        }
        if (g_npubs == 0)
            measure_done();
        break;
    case SC_IDLE:
        if (J.proc == 0) { /* the probe: a session of the subscribers' door, no room */
            const int *ports = J.transport == T_JSON ? J.ports : J.door_ports;
            sess_init(&g_probe, J.transport, ports[0], "probe", 0, NULL);
            g_probing = true;
            sess_start(&g_probe);
        }
        break;
    }
}

static void idle_tick(int64_t now)
{
    if (!g_probing) {
        if (now >= g_deadline)
            measure_done();
        return;
    }
    if (g_probe.state != S_READY) {
        if (now - g_probe.setup_started > (int64_t)(J.setup_timeout * NS)) {
            char why[96];
            snprintf(why, sizeof why, "the probe was not set up within %g s", J.setup_timeout);
            event_measure_timed_out(why);
        }
        return;
    }
    if (g_next_ping && now >= g_next_ping) {
        g_next_ping = 0;
        if (now < g_deadline)
            sess_ping(&g_probe);
        else
            measure_done();
    }
}

void on_reply(struct sess *s, struct pend pend, bool ok, const char *line, size_t n, int64_t now)
{
    if (g_phase != PH_MEASURE)
        return;
    if (pend.kind == P_PING) {
        if (!ok)
            event_failed("the probe's ping failed");
        hist_add((now - pend.sent_ns) / 1000);
        g_next_ping = now + NS / 20; /* every 50 ms */
        return;
    }
    struct pub *p = s->user;
    switch (J.scenario) {
    case SC_FANOUT:
        p->in_flight--;
        if (ok)
            g_acked++;
        else
            g_failed++;
        if (now < g_deadline && s->state == S_READY)
            fan_say(s);
        else if (p->in_flight == 0)
            publisher_done(p);
        break;
    case SC_MANYROOMS:
        g_pending--;
        if (ok) {
            g_acked_rooms[pend.room]++;
            g_acked++;
        } else
            g_failed++;
        if (!g_sending && g_pending == 0)
            measure_done();
        break;
    case SC_PINGPONG:
        if (!ok) {
            char why[256];
            snprintf(why, sizeof why, "say failed: %.*s", (int)(n > 200 ? 200 : n), line);
            event_failed(why);
        }
        hist_add((now - pend.sent_ns) / 1000);
        g_acked++;
        if (now < g_deadline && s->state == S_READY)
            sess_say(s, s->rooms[0], p->text);
        else
            publisher_done(p);
        break;
    case SC_IDLE:
        break;
    }
}

void on_lost(struct sess *s, const char *why)
{
    if (s == &g_probe)
        event_failed(why);
    if (g_phase != PH_MEASURE || s->user == NULL || s->subscriber)
        return; /* a subscriber that goes shows as lost messages */
    struct pub *p = s->user;
    int pending = (int)s->pcount; /* their replies will never come: failed, as in Python */
    switch (J.scenario) {
    case SC_FANOUT:
        g_failed += (uint64_t)pending;
        p->in_flight = 0;
        publisher_done(p);
        break;
    case SC_MANYROOMS:
        g_failed += (uint64_t)pending;
        g_pending -= pending;
        if (!g_sending && g_pending == 0)
            measure_done();
        break;
    case SC_PINGPONG: {
        char message[256];
        snprintf(message, sizeof message, "say failed: %s: %s", s->nick, why);
        event_failed(message);
        break;
    }
    case SC_IDLE:
        break;
    }
}

void on_msg(struct sess *s, const char *text, size_t n, int64_t now)
{
    if (!s->subscriber)
        return;
    g_delivered++;
    if (text == NULL)
        return;
    /* "<sent ns> <sender>:<seq> xxx..." */
    const char *end = text + n, *p = text;
    int64_t sent = 0;
    while (p < end && *p >= '0' && *p <= '9')
        sent = sent * 10 + (*p++ - '0');
    if (p == text || p >= end || *p != ' ')
        return;
    hist_add((now - sent) / 1000);
    const char *tag = ++p;
    while (p < end && *p != ' ')
        p++;
    const char *colon = p;
    while (colon > tag && colon[-1] != ':')
        colon--;
    if (colon == tag || tag[0] != 'p')
        return;
    long sender = 0;
    for (const char *q = tag + 1; q < colon - 1; q++)
        sender = sender * 10 + (*q - '0');
    uint32_t seq = 0;
    for (const char *q = colon; q < p; q++)
        seq = seq * 10 + (uint32_t)(*q - '0');
    if (sender < 0 || sender >= J.publishers || s->user == NULL)
        return;
    uint32_t *last = s->user;
    if (seq != last[sender] + 1)
        g_gaps++;
    last[sender] = seq;
}

static void tick(int64_t now)
{
    if (g_phase == PH_SETUP && now >= g_next_check) {
        g_next_check = now + CHECK_EVERY_NS;
        check_setup_timeouts(now);
    }
    if (g_phase == PH_MEASURE) {
        if (J.scenario == SC_MANYROOMS)
            many_rooms_tick(now);
        else if (J.scenario == SC_IDLE)
            idle_tick(now);
        if (g_phase == PH_MEASURE && now >= g_next_check) {
            g_next_check = now + CHECK_EVERY_NS;
            for (int k = -1; k < g_npubs; k++) {
                /* as the Python load waits: from the send, or from the window's end for
                 * what was sent before it; k = -1 is the idle probe */
                struct sess *s = k < 0 ? &g_probe : &g_pub_sessions[k];
                int64_t since = s->pcount ? s->pq[s->phead].sent_ns : 0;
                if (since && since < g_deadline)
                    since = g_deadline;
                if (since && now - since > REPLY_TIMEOUT_S * NS) {
                    char why[64];
                    snprintf(why, sizeof why, "no reply within %d s", REPLY_TIMEOUT_S);
                    event_measure_timed_out(why);
                }
            }
        }
    }
    if (g_phase == PH_FINISH && (g_delivered >= g_expected || now >= g_finish_deadline))
        finish_now();
}

static int64_t next_wake(int64_t now)
{
    int64_t wake = now + CHECK_EVERY_NS;
    if (g_phase == PH_MEASURE && J.scenario == SC_MANYROOMS && g_sending && g_npubs) {
        int64_t due = g_pubs[g_order[g_cursor]].next_at;
        if (due < wake)
            wake = due;
    }
    if (g_phase == PH_MEASURE && J.scenario == SC_IDLE) {
        int64_t due = g_probing ? g_next_ping : g_deadline;
        if (due && due < wake)
            wake = due;
    }
    if (g_phase == PH_FINISH && g_finish_deadline < wake)
        wake = g_finish_deadline;
    return wake < now ? now : wake;
}

/* -- the runner's commands ------------------------------------------------------- */

static int port_item(void *ctx, jspan item)
{
    int *count = ctx;
    double value;
    int *ports = count == &J.nports ? J.ports : J.door_ports;
    if (*count >= 16 || !jnumber(item, &value))
        return -1;
    ports[(*count)++] = (int)value;
    return 0;
}

static int job_member(void *ctx, jspan key, jspan value)
{
    (void)ctx;
    static char host[64];
    char text[64];
    double number = 0;
    bool is_number = jnumber(value, &number);
    if (jspan_is(key, "scenario") && jstring(value, text, sizeof text)) {
        if (strcmp(text, "fan-out") == 0)
            J.scenario = SC_FANOUT;
        else if (strcmp(text, "many-rooms") == 0)
            J.scenario = SC_MANYROOMS;
        else if (strcmp(text, "ping-pong") == 0)
            J.scenario = SC_PINGPONG;
        else if (strcmp(text, "idle") == 0)
            J.scenario = SC_IDLE;
        else
            return -1;
    } else if (jspan_is(key, "transport") && jstring(value, text, sizeof text)) {
        if (strcmp(text, "json") == 0)
            J.transport = T_JSON;
        else if (strcmp(text, "irc") == 0)
            J.transport = T_IRC;
        else if (strcmp(text, "ws") == 0)
            J.transport = T_WS;
        else
            return -1;
    } else if (jspan_is(key, "host") && jstring(value, host, sizeof host)) {
        g_host = host;
    } else if (jspan_is(key, "ports")) {
        return jscan_array(value, port_item, &J.nports);
    } else if (jspan_is(key, "door_ports")) {
        return jscan_array(value, port_item, &J.ndoor_ports);
    } else if (is_number) {
        long n = (long)number;
        if (jspan_is(key, "proc"))
            J.proc = n;
        else if (jspan_is(key, "procs"))
            J.procs = n;
        else if (jspan_is(key, "setup_timeout"))
            J.setup_timeout = number;
        else if (jspan_is(key, "finish_timeout"))
            J.finish_timeout = number;
        else if (jspan_is(key, "subscribers"))
            J.subscribers = n;
        else if (jspan_is(key, "publishers"))
            J.publishers = n;
        else if (jspan_is(key, "window"))
            J.window = n;
        else if (jspan_is(key, "rooms"))
            J.rooms = n;
        else if (jspan_is(key, "subscribers_per_room"))
            J.per_room = n;
        else if (jspan_is(key, "rate"))
            J.rate = n;
        else if (jspan_is(key, "sessions"))
            J.sessions = n;
        else if (jspan_is(key, "padding"))
            g_padding = (size_t)n;
    }
    return 0;
}

static int acked_member(void *ctx, jspan key, jspan value)
{
    (void)ctx;
    double count;
    if (!jnumber(value, &count))
        return -1;
    if (J.scenario == SC_FANOUT) {
        if (jspan_is(key, "fan"))
            g_expected += (uint64_t)count * (uint64_t)g_nsubs;
        return 0;
    }
    /* many-rooms: room<r> counts once per subscriber of r in this process */
    if (key.n < 5 || memcmp(key.p, "room", 4) != 0)
        return 0;
    long r = 0;
    for (size_t i = 4; i < key.n; i++)
        r = r * 10 + (key.p[i] - '0');
    if (r >= 0 && r < J.rooms)
        g_expected += (uint64_t)count * g_room_subs[r];
    return 0;
}

static int command_member(void *ctx, jspan key, jspan value)
{
    (void)ctx;
    double duration;
    if (jspan_is(key, "duration") && jnumber(value, &duration) && g_phase == PH_READY) {
        go(duration);
    } else if (jspan_is(key, "acked_rooms") && g_phase == PH_MEASURED) {
        g_expected = 0;
        if (jscan_object(value, acked_member, NULL) != 0)
            event_failed("a bad acked_rooms command");
        g_phase = PH_FINISH;
        g_finish_deadline = now_ns() + (int64_t)(J.finish_timeout * NS);
    }
    return 0;
}

static char *g_stdin;
static size_t g_stdin_len, g_stdin_cap;

/* Reads what stdin has; the next complete line (NUL-terminated, in g_stdin), or NULL. */
static char *stdin_line(bool block)
{
    for (;;) {
        char *nl = g_stdin_len ? memchr(g_stdin, '\n', g_stdin_len) : NULL;
        if (nl) {
            *nl = '\0';
            return g_stdin;
        }
        if (g_stdin_len + 4096 > g_stdin_cap) {
            g_stdin_cap = g_stdin_cap ? g_stdin_cap * 2 : 65536;
            g_stdin = realloc(g_stdin, g_stdin_cap);
            if (g_stdin == NULL)
                exit(1);
        }
        ssize_t n = read(0, g_stdin + g_stdin_len, g_stdin_cap - g_stdin_len - 1);
        if (n == 0)
            exit(0); /* the runner is gone */
        if (n < 0) {
            if (errno == EINTR || (!block && errno == EAGAIN))
                return NULL;
            exit(1);
        }
        g_stdin_len += (size_t)n;
        if (!block && memchr(g_stdin, '\n', g_stdin_len) == NULL)
            return NULL;
    }
}

static void consumed(const char *line)
{
    size_t used = strlen(line) + 1;
    memmove(g_stdin, g_stdin + used, g_stdin_len - used);
    g_stdin_len -= used;
}

static void read_commands(void)
{
    char *line = stdin_line(false);
    while (line) {
        if (jscan_object((jspan){line, strlen(line)}, command_member, NULL) != 0)
            event_failed("a command that is not a JSON object");
        consumed(line);
        line = memchr(g_stdin, '\n', g_stdin_len) ? stdin_line(false) : NULL;
    }
}

static int wait_events(struct epoll_event *events, int max, int64_t timeout_ns)
{
    static bool no_pwait2;
    if (!no_pwait2) {
        struct timespec ts = {timeout_ns / NS, timeout_ns % NS};
        int n = epoll_pwait2(g_epoll, events, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = true; /* before Linux 5.11: milliseconds */
    }
    return epoll_wait(g_epoll, events, max, (int)((timeout_ns + 999999) / 1000000));
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: %s < job\n(the benchmark runner starts it: bin/gchat-bench run --load c)\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) { /* 10,000 sessions are 10,000 sockets */
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    srandom((unsigned)(now_ns() ^ getpid()));

    char *job = stdin_line(true);
    if (jscan_object((jspan){job, strlen(job)}, job_member, NULL) != 0)
        event_failed("the job is not JSON this load understands");
    if (J.nports == 0 || (J.transport != T_JSON && J.ndoor_ports == 0) || J.procs < 1 ||
        (J.scenario != SC_FANOUT && J.rooms < 1) || (J.scenario == SC_MANYROOMS && J.rate < 1))
        event_failed("the job lacks ports or sizes");
    if (g_padding > 200)
        event_failed("this load pads texts to 200 characters at most");
    consumed(job);

    g_epoll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_epoll, EPOLL_CTL_ADD, 0, &ev);

    build();
    g_setup_started = now_ns();
    g_setup_cpu = cpu_seconds();
    pump();
    if (g_stdin_len && memchr(g_stdin, '\n', g_stdin_len))
        read_commands(); /* a command sent with the job */

    struct epoll_event events[512];
    for (;;) {
        sess_flush_dirty();
        int64_t now = now_ns();
        int n = wait_events(events, 512, next_wake(now) - now);
        if (n < 0 && errno != EINTR)
            event_failed(strerror(errno));
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                read_commands();
            else
                sess_on_event(events[i].data.ptr, events[i].events);
        }
        tick(now_ns());
    }
}
