/* gchat-load: the benchmark's load generator in C (see load.c for the whole story).
 * session.c keeps the client sessions of the three doors (JSON lines over TCP, IRC,
 * JSON over WebSocket) on one epoll loop; load.c runs the scenarios and talks to the
 * runner. This header is what they share. */
#ifndef GCHAT_LOAD_H
#define GCHAT_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum transport { T_JSON, T_IRC, T_WS };
enum state { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_SETUP, S_READY, S_CLOSED };
enum pend_kind { P_SETUP, P_SAY, P_PING };

/* A request waiting for its reply: replies come in request order (PROTOCOL.md 2), so
 * a session keeps them in a FIFO and needs no ids to match them. */
struct pend {
    int64_t sent_ns;
    int32_t room;
    uint8_t kind;
};

struct sess {
    int fd;
    uint8_t transport, state;
    bool checking;   /* check each msg's text (seq gaps, latency), else only count it */
    bool subscriber; /* its msgs count as deliveries */
    bool epollout;   /* EPOLLOUT is registered: output is waiting for the socket */
    bool dirty;      /* on the list of sessions to flush at the end of this turn */
    int port;
    char nick[24];
    int nrooms;
    int32_t *rooms;
    int64_t setup_started;
    int setup_left;  /* setup replies still awaited (JSON, WS), or 001 and 366s (IRC) */
    uint64_t next_id;
    uint64_t msgs;   /* msgs received (PRIVMSGs over IRC) */
    /* input: what is left of a line or frame between reads, and a fragmented message */
    char *rem;
    size_t rlen, rcap;
    char *frag;
    size_t flen, fcap;
    /* output queued this turn, or that the socket did not take */
    char *out;
    size_t olen, ocap;
    /* requests awaiting replies (a ring) */
    struct pend *pq;
    uint32_t phead, pcount, pcap;
    /* the scenario's own state for this session (load.c) */
    void *user;
};

/* session.c */
extern int g_epoll;
extern const char *g_host;
extern size_t g_padding;
int64_t now_ns(void);
void sess_init(struct sess *s, enum transport t, int port, const char *nick, int nrooms,
               const int32_t *rooms);
void sess_start(struct sess *s);               /* connect, then set up (hello, joins) */
void sess_on_event(struct sess *s, uint32_t events);
void sess_request(struct sess *s, enum pend_kind kind, int32_t room, const char *json);
void sess_say(struct sess *s, int32_t room, const char *text);
void sess_ping(struct sess *s);
void sess_flush_dirty(void);                   /* write what this turn queued */
void sess_close(struct sess *s);
const char *room_name(int32_t room);           /* load.c: the name of room number `room` */

/* load.c: what sessions report */
void on_setup_done(struct sess *s);
void on_setup_failed(struct sess *s, const char *why);
void on_msg(struct sess *s, const char *text, size_t n, int64_t now);
void on_reply(struct sess *s, struct pend pend, bool ok, const char *line, size_t n, int64_t now);
void on_lost(struct sess *s, const char *why);

#endif
