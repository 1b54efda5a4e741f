/*
 * broker.h - helpers for KILL_TEST tests that run their own broker
 * (`$FM_TEST_FLOWMESH serve`), kill it and restart it.
 */
#ifndef FM_TEST_BROKER_H
#define FM_TEST_BROKER_H

#include <sys/types.h>

struct broker {
    pid_t pid;     /* 0 when not running */
    int port;      /* the loopback port (kept across broker_restart) */
    char url[64];  /* "grpc://127.0.0.1:<port>" */
};

/* Starts `flowmesh serve` on a free loopback port over `data` (a URL),
 * output appended to `log`; the child dies with this process
 * (PR_SET_PDEATHSIG). Waits (bounded, 10 s x FM_TEST_SLOW) for the port.
 * Returns 0 on success. */
int broker_start(struct broker *b, const char *data, const char *log);
/* broker_start with more `serve` arguments (NULL-terminated), e.g.
 * {"--access-file", path, NULL}. */
int broker_start_args(struct broker *b, const char *data, const char *log, const char *const *extra);
/* Starts it again on the same port (b->port) after broker_stop; retries
 * (bounded) while the port cannot be bound yet. Returns 0 on success. */
int broker_restart(struct broker *b, const char *data, const char *log);
/* Sends `sig` (SIGTERM: graceful, SIGKILL: kill -9) and waits (bounded)
 * for the exit; SIGKILL after 10 s. */
void broker_stop(struct broker *b, int sig);
/* SIGSTOPs the broker and waits (bounded, 1 s) until it is stopped; 0 on success. */
int broker_freeze(struct broker *b);
/* True if something accepts TCP connections on 127.0.0.1:port. */
int port_open(int port);
/* rm -rf path (test temp dirs). */
void rm_tree(const char *path);

#endif
