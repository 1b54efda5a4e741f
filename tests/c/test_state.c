/* test_state.c - connection state reporting and the bounded publish pipeline:
 *   - an embedded client reports CONNECTED first and CLOSED last; bad
 *     arguments and closed handles are clear errors;
 *   - against a broker killed and restarted (KILL_TEST): CONNECTED,
 *     RECONNECTING, CONNECTED, CLOSED in that order;
 *   - a client that gives up reports DISCONNECTED and calls fail with
 *     FM_ERR_DISCONNECTED at once; a state callback may close its client;
 *   - max_in_flight with nonblocking: a full pipeline refuses with
 *     FM_ERR_UNAVAILABLE (no callback), accepted publishes complete. */
#include "harness.h"
#include "broker.h"

#include <signal.h>
#include <unistd.h>

#define MAX_STATES 64

struct states {
    pthread_mutex_t mu;
    fm_conn_state seen[MAX_STATES];
    fm_status cause[MAX_STATES];
    int n;
    struct waiter w;
    fm_client *close_on_disconnect; /* closed from the callback when set */
    int closed_in_callback;
};

static void states_init(struct states *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    waiter_init(&s->w);
}

static void states_destroy(struct states *s)
{
    pthread_mutex_destroy(&s->mu);
    waiter_destroy(&s->w);
}

static void on_state(void *ud, fm_conn_state state, fm_status cause, const char *detail)
{
    struct states *s = ud;
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_STATES) {
        s->seen[s->n] = state;
        s->cause[s->n] = cause;
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    /* the detail is readable during the call */
    if (detail)
        (void)strlen(detail);
    if (state == FM_STATE_DISCONNECTED && s->close_on_disconnect) {
        fm_client *c = s->close_on_disconnect;
        s->close_on_disconnect = NULL;
        fm_client_close(c);
        s->closed_in_callback = 1;
    }
    waiter_add(&s->w, 1);
}

/* Index of the first `state` at or after `from`, or -1. */
static int find_state(struct states *s, int from, fm_conn_state state)
{
    pthread_mutex_lock(&s->mu);
    int at = -1;
    for (int i = from; i < s->n && at < 0; i++)
        if (s->seen[i] == state)
            at = i;
    pthread_mutex_unlock(&s->mu);
    return at;
}

/* Waits (bounded) until `state` shows up at or after `from`; its index or -1. */
static int wait_state(struct states *s, int from, fm_conn_state state, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    int at;
    while ((at = find_state(s, from, state)) < 0 && now_ms() < deadline)
        sleep_ms(5);
    return at;
}

static fm_client *connect_opts(const char *url, const char *const *kv)
{
    fm_options *o = fm_options_new();
    if (!o)
        return NULL;
    for (; kv[0]; kv += 2)
        if (fm_options_set(o, kv[0], kv[1]) != FM_OK) {
            harness_fail(__FILE__, __LINE__, "option %s=%s: %s", kv[0], kv[1], fm_last_error());
            fm_options_free(o);
            return NULL;
        }
    fm_client *c = NULL;
    fm_status st = fm_client_connect(url, o, &c);
    fm_options_free(o);
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "connect %s: %s (%s)", url, fm_status_str(st), fm_last_error());
        return NULL;
    }
    return c;
}

TEST(state_of_an_embedded_client_is_connected_until_closed)
{
    struct states s;
    states_init(&s);
    fm_client *c = mem_client();
    REQUIRE(c);
    fm_conn_state now = 0;
    CHECK_OK(fm_client_state(c, &now));
    CHECK(now == FM_STATE_CONNECTED);
    CHECK_ST(fm_client_on_state(c, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_client_state(c, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_client_state(NULL, &now), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_client_on_state(c, on_state, &s));
    CHECK(waiter_wait(&s.w, 1, 5000 * slow()) == 1);
    fm_client_close(c);
    /* close joined the listener: CLOSED arrived before it returned */
    CHECK(waiter_get(&s.w) == 2);
    CHECK(s.n == 2 && s.seen[0] == FM_STATE_CONNECTED && s.seen[1] == FM_STATE_CLOSED);
    CHECK(s.cause[0] == FM_OK && s.cause[1] == FM_OK);
    CHECK_ST(fm_client_state(c, &now), FM_ERR_CLOSED);
    CHECK_ST(fm_client_on_state(c, on_state, &s), FM_ERR_CLOSED);
    states_destroy(&s);
}

TEST(state_listeners_are_bounded)
{
    struct states s;
    states_init(&s);
    fm_client *c = mem_client();
    REQUIRE(c);
    int ok = 0;
    fm_status st = FM_OK;
    for (int i = 0; i < 20 && st == FM_OK; i++) {
        st = fm_client_on_state(c, on_state, &s);
        if (st == FM_OK)
            ok++;
    }
    CHECK(ok == 16);
    CHECK(st == FM_ERR_INVALID_ARGUMENT);
    fm_client_close(c);
    CHECK(waiter_get(&s.w) == 32); /* CONNECTED and CLOSED, to each of 16 */
    states_destroy(&s);
}

struct testdir {
    char dir[64];
    char data[128];
    char log[128];
};

static int testdir_make(struct testdir *t, const char *tag)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/flowmesh-c%s-XXXXXX", tag);
    if (!mkdtemp(t->dir))
        return -1;
    snprintf(t->data, sizeof t->data, "file://%s/data", t->dir);
    snprintf(t->log, sizeof t->log, "%s/broker.log", t->dir);
    return 0;
}

KILL_TEST(state_events_follow_broker_kill_and_restart)
{
    struct testdir td;
    REQUIRE(testdir_make(&td, "state") == 0);
    struct broker b = {0, 0, ""};
    REQUIRE(broker_start(&b, td.data, td.log) == 0);
    const char *kv[] = {"heartbeat_ms", "100", "reconnect_initial_ms", "50", "reconnect_max_ms", "200",
                        "reconnect_jitter_ms", "0", "request_timeout_ms", "3000", NULL};
    fm_client *c = connect_opts(b.url, kv);
    if (!c) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct states s;
    states_init(&s);
    CHECK_OK(fm_client_on_state(c, on_state, &s));
    fm_msg m = text_msg("before");
    fm_position pos;
    CHECK_OK(fm_publish(c, "states", &m, &pos));

    broker_stop(&b, SIGKILL);
    int lost = wait_state(&s, 0, FM_STATE_RECONNECTING, 5000 * slow());
    CHECK_MSG(lost == 1, "RECONNECTING at %d", lost);
    if (lost >= 0)
        CHECK(s.cause[lost] == FM_ERR_DISCONNECTED || s.cause[lost] == FM_ERR_TIMEOUT ||
              s.cause[lost] == FM_ERR_UNAVAILABLE);
    fm_conn_state now = 0;
    CHECK_OK(fm_client_state(c, &now));
    CHECK(now == FM_STATE_RECONNECTING);
    /* a call while the broker is gone fails, within its deadline */
    int64_t t0 = now_ms();
    fm_status st = fm_publish(c, "states", &m, &pos);
    CHECK(st != FM_OK);
    CHECK_MSG(now_ms() - t0 <= 3500 * slow(), "publish took %lld ms", (long long)(now_ms() - t0));

    REQUIRE(broker_restart(&b, td.data, td.log) == 0);
    int back = wait_state(&s, lost < 0 ? 0 : lost, FM_STATE_CONNECTED, 10000 * slow());
    CHECK_MSG(back == 2, "CONNECTED again at %d", back);
    m = text_msg("after");
    CHECK_OK(fm_publish(c, "states", &m, &pos));
    fm_client_close(c);
    CHECK(s.n >= 4 && s.seen[0] == FM_STATE_CONNECTED && s.seen[s.n - 1] == FM_STATE_CLOSED);
    CHECK(find_state(&s, 0, FM_STATE_DISCONNECTED) < 0);
    broker_stop(&b, SIGTERM);
    states_destroy(&s);
    if (harness_failures == 0)
        rm_tree(td.dir);
}

KILL_TEST(a_client_that_gives_up_is_disconnected_and_may_be_closed_from_its_callback)
{
    struct testdir td;
    REQUIRE(testdir_make(&td, "giveup2") == 0);
    struct broker b = {0, 0, ""};
    REQUIRE(broker_start(&b, td.data, td.log) == 0);
    const char *kv[] = {"heartbeat_ms", "100", "reconnect_initial_ms", "20", "reconnect_max_ms", "20",
                        "reconnect_jitter_ms", "0", "max_reconnect_attempts", "2", NULL};
    fm_client *c = connect_opts(b.url, kv);
    fm_client *watcher = connect_opts(b.url, kv);
    if (!c || !watcher) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct states s, w;
    states_init(&s);
    states_init(&w);
    CHECK_OK(fm_client_on_state(watcher, on_state, &w));
    s.close_on_disconnect = c;
    CHECK_OK(fm_client_on_state(c, on_state, &s));
    broker_stop(&b, SIGKILL);
    /* the watcher stays open: DISCONNECTED, then calls fail at once */
    CHECK(wait_state(&w, 0, FM_STATE_DISCONNECTED, 10000 * slow()) == 2);
    int64_t t0 = now_ms();
    CHECK_ST(fm_kv_exists(watcher, "b", "k", &(bool){0}), FM_ERR_DISCONNECTED);
    CHECK(now_ms() - t0 < 500 * slow());
    /* the other client closed itself from its callback */
    int64_t deadline = now_ms() + 10000 * slow();
    while (!s.closed_in_callback && now_ms() < deadline)
        sleep_ms(5);
    CHECK(s.closed_in_callback);
    sleep_ms(50);
    CHECK(s.seen[s.n - 1] == FM_STATE_CLOSED);
    fm_client_close(watcher);
    CHECK(w.seen[w.n - 1] == FM_STATE_CLOSED);
    states_destroy(&s);
    states_destroy(&w);
    if (harness_failures == 0)
        rm_tree(td.dir);
}

struct completions {
    struct waiter w;
    long failed;
};

static void on_published(void *ud, fm_status st, fm_position pos)
{
    struct completions *c = ud;
    (void)pos;
    if (st != FM_OK)
        __atomic_add_fetch(&c->failed, 1, __ATOMIC_SEQ_CST);
    waiter_add(&c->w, 1);
}

KILL_TEST(a_full_pipeline_refuses_with_nonblocking_and_accepted_publishes_complete)
{
    struct testdir td;
    REQUIRE(testdir_make(&td, "inflight") == 0);
    struct broker b = {0, 0, ""};
    REQUIRE(broker_start(&b, td.data, td.log) == 0);
    const char *kv[] = {"max_in_flight", "2", "nonblocking", "true", "heartbeat_ms", "0",
                        "request_timeout_ms", "20000", NULL};
    fm_client *c = connect_opts(b.url, kv);
    if (!c) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct completions done = {0};
    waiter_init(&done.w);
    fm_msg m = text_msg("x");
    fm_position pos;
    CHECK_OK(fm_publish(c, "pipe", &m, &pos)); /* the publish stream is open */
    REQUIRE(broker_freeze(&b) == 0); /* the broker stops answering: publishes pile up */
    long accepted = 0, refused = 0;
    int named_the_limit = 0;
    for (int i = 0; i < 50; i++) {
        fm_status st = fm_publish_async(c, "pipe", &m, on_published, &done);
        if (st == FM_OK)
            accepted++;
        else if (st == FM_ERR_UNAVAILABLE) {
            refused++;
            named_the_limit |= strstr(fm_last_error(), "max_in_flight") != NULL;
        } else
            CHECK_MSG(0, "publish_async: %s", fm_status_str(st));
        sleep_ms(1);
    }
    /* one batch in the engine call, at most 2 queued behind it */
    CHECK_MSG(accepted >= 1 && accepted <= 3, "accepted %ld", accepted);
    CHECK(refused == 50 - accepted);
    CHECK(named_the_limit);
    kill(b.pid, SIGCONT);
    CHECK(waiter_wait(&done.w, accepted, 15000 * slow()) == accepted);
    CHECK(done.failed == 0);
    sleep_ms(50);
    CHECK(waiter_get(&done.w) == accepted); /* refused ones never call back */
    fm_client_close(c);
    broker_stop(&b, SIGTERM);
    waiter_destroy(&done.w);
    if (harness_failures == 0)
        rm_tree(td.dir);
}
