/*
 * harness.h - a tiny test harness for the flowmesh C ABI tests.
 *
 *   TEST(name) { ... }            defines and registers an embedded-only test
 *   CORE_TEST(name) { ... }       a core test: engine semantics, also run
 *                                 against the broker (FM_TEST_URL=grpc://...)
 *   BROKER_TEST(name) { ... }     runs only against a broker (grpc:// URL)
 *   KILL_TEST(name) { ... }       runs only when FM_TEST_FLOWMESH names the
 *                                 flowmesh binary (it starts and kills its
 *                                 own brokers); then nothing else runs
 *   CHECK(cond)                   records a failure (with file:line) and goes on
 *   REQUIRE(cond)                 records a failure and leaves the test
 *   CHECK_ST(call, FM_ERR_...)    the call must return that status
 *   REQUIRE_OK(call)              the call must return FM_OK, else leave the test
 *
 * A test passes when none of its checks failed. main() (harness.c) runs the
 * registered tests of the selected kinds (or those whose name contains
 * argv[1] / the FM_TEST_FILTER env var), prints "ok"/"FAIL" per test and,
 * last, exactly one line "N passed, N failed". Exit status 1 if anything
 * failed.
 *
 * Which tests run (FM_TEST_URL, default "mem://"):
 *   mem://...     embedded-only + core tests (the full suite)
 *   grpc://...    core + broker-only tests, against that broker; every core
 *                 test's clients get a namespace of their own (test_ns()),
 *                 so tests sharing one broker do not see each other's data
 *   other URLs    core tests only
 *   FM_TEST_FLOWMESH=/path/to/flowmesh set: only the KILL_TEST tests.
 * Core tests connect with test_client() / test_client_opts(); embedded-only
 * tests may use mem_client() (always "mem://").
 *
 * Waiting for callbacks: use struct waiter (mutex + condvar, bounded wait);
 * never sleep unboundedly.
 */
#ifndef FM_TEST_HARNESS_H
#define FM_TEST_HARNESS_H

#include <flowmesh.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*test_fn)(void);

enum test_kind { TK_EMBEDDED, TK_CORE, TK_BROKER, TK_KILL };

struct test_case {
    const char *name;
    test_fn fn;
    int kind;
};

void harness_register(const char *name, test_fn fn, int kind);
/* Failed checks in the current test so far. */
extern int harness_failures;
void harness_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST_OF_KIND(name, kind)                                            \
    static void test_##name(void);                                          \
    __attribute__((constructor)) static void register_##name(void)          \
    {                                                                       \
        harness_register(#name, test_##name, kind);                         \
    }                                                                       \
    static void test_##name(void)

#define TEST(name) TEST_OF_KIND(name, TK_EMBEDDED)
#define CORE_TEST(name) TEST_OF_KIND(name, TK_CORE)
#define BROKER_TEST(name) TEST_OF_KIND(name, TK_BROKER)
#define KILL_TEST(name) TEST_OF_KIND(name, TK_KILL)

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond))                                                        \
            harness_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                \
    do {                                                                    \
        if (!(cond))                                                        \
            harness_fail(__FILE__, __LINE__, __VA_ARGS__);                  \
    } while (0)

#define REQUIRE(cond)                                                       \
    do {                                                                    \
        if (!(cond)) {                                                      \
            harness_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);        \
            return;                                                         \
        }                                                                   \
    } while (0)

#define CHECK_ST(call, expected)                                            \
    do {                                                                    \
        fm_status got_ = (call);                                            \
        fm_status exp_ = (expected);                                        \
        if (got_ != exp_)                                                   \
            harness_fail(__FILE__, __LINE__, "%s: expected %s, got %s (%s)", \
                         #call, fm_status_str(exp_), fm_status_str(got_),   \
                         fm_last_error());                                  \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, FM_OK)

#define REQUIRE_OK(call)                                                    \
    do {                                                                    \
        fm_status got_ = (call);                                            \
        if (got_ != FM_OK) {                                                \
            harness_fail(__FILE__, __LINE__, "%s: expected FM_OK, got %s (%s)", \
                         #call, fm_status_str(got_), fm_last_error());      \
            return;                                                         \
        }                                                                   \
    } while (0)

/* ---- helpers (harness.c) ---------------------------------------------- */

/* A counter that library threads bump and the test thread waits on. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long count;
};
void waiter_init(struct waiter *w);
void waiter_destroy(struct waiter *w);
void waiter_add(struct waiter *w, long n);
long waiter_get(struct waiter *w);
/* Waits until count >= want or timeout_ms passes; returns the count. */
long waiter_wait(struct waiter *w, long want, long timeout_ms);

/* Monotonic milliseconds. */
int64_t now_ms(void);
/* Sleeps ms milliseconds (bounded). */
void sleep_ms(long ms);
/* Threads of this process (/proc/self/task entries). */
int thread_count(void);
/* Open file descriptors of this process (/proc/self/fd entries, minus the
 * one used to list them), -1 if unknown. */
int fd_count(void);
/* VmRSS of this process in kB (/proc/self/status), -1 if unknown. */
long rss_kb(void);
/* Live heap bytes as the ASan allocator counts them (every malloc of the
 * process, Rust's included); -1 when not built with ASan. */
long heap_bytes(void);
/* Waits (bounded, up to timeout_ms) until thread_count() == want; returns
 * the last count seen. A joined thread can linger in /proc for a moment. */
int wait_thread_count(int want, long timeout_ms);
/* Integer from an env var, or def. */
long env_long(const char *name, long def);
/* Scale factor for timeouts (FM_TEST_SLOW, e.g. 10 under valgrind). */
long slow(void);
/* True when running under valgrind / ASan (set by run.sh via env). */
int under_valgrind(void);

/* A fresh private in-memory client; NULL (and a failure) if connect fails. */
fm_client *mem_client(void);
/* The URL core tests connect to: FM_TEST_URL, default "mem://". */
const char *test_url(void);
/* True when test_url() is a broker (grpc://). */
int broker_mode(void);
/* The namespace core tests' clients use: "default" on mem:// (each mem://
 * client is private anyway), else one unique per test and process. */
const char *test_ns(void);
/* "default/<test_ns()>/<name>" into buf (the fully qualified name). */
const char *qualified(char *buf, size_t size, const char *name);
/* A client on test_url() in namespace test_ns(); NULL (and a failure) if
 * connect fails. With opts (may be NULL; "namespace" is set on it in broker
 * mode), those connect options. */
fm_client *test_client(void);
fm_client *test_client_opts(fm_options *opts);
/* For tests whose clients must share one engine: on mem:// a client of the
 * named in-memory engine "mem://<mem_name>", else test_client(). */
fm_client *shared_client(const char *mem_name);
/* An fm_msg over a C string payload (no key, no headers). */
fm_msg text_msg(const char *s);
/* Compares a (ptr,len) buffer with a C string. */
int bytes_eq(const void *p, size_t len, const char *s);

#endif
