/* test_reconnect.c - subscriptions across broker failures (KILL_TEST: they
 * start their own brokers through FM_TEST_FLOWMESH, see broker.h):
 *   - max_reconnect_attempts reached: a pull subscription's next returns
 *     FM_ERR_DISCONNECTED, a callback subscription's status turns
 *     FM_ERR_DISCONNECTED, within a bounded time;
 *   - unlimited attempts: a subscription survives kill -9 + restart of the
 *     broker on the same port and file:// data, in order, no duplicates;
 *     close while delivering after the restart, and while reconnecting;
 *   - many broker restarts with a subscribed client: threads and file
 *     descriptors do not grow. */
#include "harness.h"
#include "broker.h"

#include <signal.h>
#include <unistd.h>

/* ---- shared bits ----------------------------------------------------------- */

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

static void testdir_done(struct testdir *t)
{
    if (harness_failures == 0)
        rm_tree(t->dir);
    else
        printf("    broker data and log kept in %s\n", t->dir);
}

/* connect with the given reconnect schedule ("0" attempts = forever) */
static fm_client *connect_with(const char *url, const char *initial_ms, const char *max_ms,
                               const char *jitter_ms, const char *attempts)
{
    fm_options *o = fm_options_new();
    if (!o)
        return NULL;
    fm_status st = FM_OK;
    if (st == FM_OK) st = fm_options_set(o, "reconnect_initial_ms", initial_ms);
    if (st == FM_OK) st = fm_options_set(o, "reconnect_max_ms", max_ms);
    if (st == FM_OK) st = fm_options_set(o, "reconnect_multiplier", "2");
    if (st == FM_OK) st = fm_options_set(o, "reconnect_jitter_ms", jitter_ms);
    if (st == FM_OK) st = fm_options_set(o, "max_reconnect_attempts", attempts);
    if (st == FM_OK) st = fm_options_set(o, "connect_timeout_ms", "1000");
    if (st == FM_OK) st = fm_options_set(o, "request_timeout_ms", "3000");
    fm_client *c = NULL;
    if (st == FM_OK)
        st = fm_client_connect(url, o, &c);
    fm_options_free(o);
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "connect %s: %s (%s)", url, fm_status_str(st),
                     fm_last_error());
        return NULL;
    }
    return c;
}

static fm_options *opts1(const char *k, const char *v)
{
    fm_options *o = fm_options_new();
    if (o && fm_options_set(o, k, v) != FM_OK)
        harness_fail(__FILE__, __LINE__, "fm_options_set(%s, %s): %s", k, v, fm_last_error());
    return o;
}

/* Publishes with retries while the broker (re)starts: bounded by timeout_ms. */
static fm_status publish_retry(fm_client *c, const char *stream, const char *body, long timeout_ms)
{
    fm_msg m = text_msg(body);
    int64_t deadline = now_ms() + timeout_ms;
    fm_status st;
    for (;;) {
        st = fm_publish(c, stream, &m, NULL);
        if (st == FM_OK || now_ms() >= deadline)
            return st;
        if (st != FM_ERR_DISCONNECTED && st != FM_ERR_UNAVAILABLE && st != FM_ERR_TIMEOUT)
            return st;
        sleep_ms(20);
    }
}

/* A callback subscription's record: offsets must be dense from `first`, in
 * order, each once, payloads as published (checked by the test). */
#define MAX_SEEN 100000
struct seen {
    struct waiter w;
    pthread_mutex_t mu;
    long n;
    uint64_t next_offset;  /* the offset expected next */
    long out_of_order;     /* offsets other than next_offset */
    char first_bad[160];
    long after_close;      /* callbacks that began after close returned */
    int closed;
    int inside;
    long sleep_ms;         /* per callback: a slow consumer */
    char (*bodies)[24];    /* payload of message i (n < MAX_SEEN) */
};

static struct seen *seen_new(uint64_t first_offset, long sleep)
{
    struct seen *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->bodies = calloc(MAX_SEEN, sizeof *s->bodies);
    if (!s->bodies) {
        free(s);
        return NULL;
    }
    waiter_init(&s->w);
    pthread_mutex_init(&s->mu, NULL);
    s->next_offset = first_offset;
    s->sleep_ms = sleep;
    return s;
}

static void seen_free(struct seen *s)
{
    if (!s)
        return;
    waiter_destroy(&s->w);
    pthread_mutex_destroy(&s->mu);
    free(s->bodies);
    free(s);
}

static void seen_add(struct seen *s, const fm_message *m)
{
    pthread_mutex_lock(&s->mu);
    if (s->closed)
        s->after_close++;
    if (m->offset != s->next_offset && s->out_of_order++ == 0)
        snprintf(s->first_bad, sizeof s->first_bad, "message #%ld has offset %llu, want %llu",
                 s->n, (unsigned long long)m->offset, (unsigned long long)s->next_offset);
    s->next_offset = m->offset + 1;
    if (s->n < MAX_SEEN)
        snprintf(s->bodies[s->n], sizeof s->bodies[0], "%.*s", (int)m->payload_len,
                 (const char *)m->payload);
    s->n++;
    pthread_mutex_unlock(&s->mu);
}

static void on_seen(void *ud, const fm_message *m)
{
    struct seen *s = ud;
    pthread_mutex_lock(&s->mu);
    s->inside = 1;
    pthread_mutex_unlock(&s->mu);
    seen_add(s, m);
    if (s->sleep_ms)
        sleep_ms(s->sleep_ms);
    pthread_mutex_lock(&s->mu);
    s->inside = 0;
    pthread_mutex_unlock(&s->mu);
    waiter_add(&s->w, 1);
}

/* Pulls until `want` messages in total were seen by s (bounded). */
static fm_status pull_into(fm_subscription *sub, struct seen *s, long want, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (waiter_get(&s->w) < want && now_ms() < deadline) {
        fm_messages *ms = NULL;
        fm_status st = fm_subscription_next(sub, 64, 200, &ms);
        if (st != FM_OK)
            return st;
        for (size_t i = 0; i < fm_messages_len(ms); i++) {
            seen_add(s, fm_messages_get(ms, i));
            waiter_add(&s->w, 1);
        }
        fm_messages_free(ms);
    }
    return FM_OK;
}

static void noop_kv(void *ud, fm_kv_op op, const char *k, const uint8_t *v, size_t n, uint64_t r)
{
    (void)ud; (void)op; (void)k; (void)v; (void)n; (void)r;
}

/* Polls fm_subscription_status until it is not FM_OK (bounded). */
static fm_status wait_status_not_ok(fm_subscription *sub, long timeout_ms, int64_t *at)
{
    int64_t deadline = now_ms() + timeout_ms;
    fm_status st;
    while ((st = fm_subscription_status(sub)) == FM_OK && now_ms() < deadline)
        sleep_ms(5);
    *at = now_ms();
    return st;
}

/* ---- max_reconnect_attempts: the feed ends with FM_ERR_DISCONNECTED ----------- */

KILL_TEST(reconnect_gives_up_after_max_attempts)
{
    struct testdir td;
    REQUIRE(testdir_make(&td, "giveup") == 0);
    struct broker b = {0, 0, ""};
    if (broker_start(&b, td.data, td.log) != 0) {
        harness_fail(__FILE__, __LINE__, "cannot start the broker (log %s)", td.log);
        return;
    }
    int base = thread_count();
    fm_client *c = connect_with(b.url, "50", "100", "0", "1");
    if (!c) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct seen *cs = seen_new(0, 0), *ps = seen_new(0, 0);
    REQUIRE(cs && ps);
    fm_options *o = opts1("start", "earliest");
    fm_subscription *cb = NULL, *pull = NULL, *watch = NULL;
    CHECK_OK(fm_subscribe(c, "gone", o, on_seen, cs, &cb));
    CHECK_OK(fm_subscribe_pull(c, "gone", o, &pull));
    fm_options_free(o);
    CHECK_OK(fm_kv_watch(c, "gone-kv", "", noop_kv, NULL, &watch));
    REQUIRE(cb && pull && watch);
    for (int i = 0; i < 3; i++)
        CHECK_OK(publish_retry(c, "gone", "before", 0));
    CHECK(waiter_wait(&cs->w, 3, 5000 * slow()) == 3);
    CHECK_OK(pull_into(pull, ps, 3, 5000 * slow()));
    CHECK(waiter_get(&ps->w) == 3);
    CHECK_OK(fm_subscription_status(cb));
    CHECK_OK(fm_subscription_status(pull));
    CHECK_OK(fm_subscription_status(watch));

    int64_t killed = now_ms();
    broker_stop(&b, SIGKILL);
    /* callback subscription: its status turns FM_ERR_DISCONNECTED */
    int64_t at;
    fm_status st = wait_status_not_ok(cb, 10000 * slow(), &at);
    CHECK_MSG(st == FM_ERR_DISCONNECTED, "callback subscription status after the kill: %s (%s)",
              fm_status_str(st), fm_last_error());
    CHECK_MSG(at - killed < 5000 * slow(), "callback subscription status changed %lld ms after "
              "the kill (reconnect 50 ms, 1 attempt)", (long long)(at - killed));
    printf("    callback subscription: %s %lld ms after kill -9 (%s)\n", fm_status_str(st),
           (long long)(at - killed), st != FM_OK ? fm_last_error() : "");
    /* pull subscription: next returns FM_ERR_DISCONNECTED */
    fm_messages *ms = (fm_messages *)1;
    int64_t t0 = now_ms();
    st = fm_subscription_next(pull, 10, 10000 * slow(), &ms);
    int64_t dt = now_ms() - t0;
    CHECK_MSG(st == FM_ERR_DISCONNECTED, "pull next after the kill: %s (%s), %zu messages",
              fm_status_str(st), fm_last_error(), st == FM_OK ? fm_messages_len(ms) : (size_t)0);
    CHECK(st == FM_OK || ms == NULL);
    if (st == FM_OK)
        fm_messages_free(ms);
    CHECK_MSG(dt < 5000 * slow(), "pull next took %lld ms to report the lost broker",
              (long long)dt);
    printf("    pull next: %s %lld ms after kill -9 (%s)\n", fm_status_str(st),
           (long long)(now_ms() - killed), st != FM_OK ? fm_last_error() : "");
    /* it stays ended: status and a second next say the same, at once */
    CHECK_ST(fm_subscription_status(pull), FM_ERR_DISCONNECTED);
    CHECK(strlen(fm_last_error()) > 0);
    t0 = now_ms();
    ms = NULL;
    CHECK_ST(fm_subscription_next(pull, 10, 5000, &ms), FM_ERR_DISCONNECTED);
    CHECK_MSG(now_ms() - t0 < 1000 * slow(), "second next took %lld ms",
              (long long)(now_ms() - t0));
    CHECK_ST(fm_subscription_status(cb), FM_ERR_DISCONNECTED);
    /* KV watches end on a lost link (docs/ABI.md) */
    st = wait_status_not_ok(watch, 5000 * slow(), &at);
    CHECK_MSG(st == FM_ERR_DISCONNECTED || st == FM_ERR_UNAVAILABLE,
              "kv watch status after the kill: %s", fm_status_str(st));
    /* no callbacks after the feed ended */
    CHECK(waiter_get(&cs->w) == 3);

    t0 = now_ms();
    fm_client_close(c);
    CHECK_MSG(now_ms() - t0 < 2000 * slow(), "close after the feeds ended took %lld ms",
              (long long)(now_ms() - t0));
    CHECK_OK(fm_unsubscribe(cb));
    CHECK_OK(fm_unsubscribe(pull));
    CHECK_OK(fm_unsubscribe(watch));
    int t1 = wait_thread_count(base, 3000 * slow());
    CHECK_MSG(t1 == base, "threads %d before connect, %d after close", base, t1);
    seen_free(cs);
    seen_free(ps);
    testdir_done(&td);
}

/* Messages the feed delivered before it failed are still handed out by next
 * (a callback subscription runs their callbacks before it stops); the error
 * comes after them. Here 5 messages are buffered when the feed gives up and
 * next(max 100) is called once. */
KILL_TEST(pull_hands_out_buffered_messages_before_the_error)
{
    struct testdir td;
    REQUIRE(testdir_make(&td, "pullbuf") == 0);
    struct broker b = {0, 0, ""};
    if (broker_start(&b, td.data, td.log) != 0) {
        harness_fail(__FILE__, __LINE__, "cannot start the broker (log %s)", td.log);
        return;
    }
    fm_client *c = connect_with(b.url, "50", "100", "0", "1");
    if (!c) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct seen *cs = seen_new(0, 0);
    REQUIRE(cs);
    fm_subscription *cb = NULL, *pull = NULL;
    CHECK_OK(fm_subscribe_pull(c, "buffered", NULL, &pull));
    CHECK_OK(fm_subscribe(c, "buffered", NULL, on_seen, cs, &cb)); /* a witness */
    REQUIRE(cb && pull);
    for (int i = 0; i < 5; i++) {
        char body[16];
        snprintf(body, sizeof body, "b-%d", i);
        CHECK_OK(publish_retry(c, "buffered", body, 0));
    }
    CHECK(waiter_wait(&cs->w, 5, 5000 * slow()) == 5);
    sleep_ms(200 * slow()); /* the pull feed has them too */
    broker_stop(&b, SIGKILL);
    int64_t at;
    CHECK_ST(wait_status_not_ok(cb, 10000 * slow(), &at), FM_ERR_DISCONNECTED);
    sleep_ms(300 * slow()); /* same schedule: the pull feed has given up too */
    fm_status pst = fm_subscription_status(pull);
    printf("    pull status with 5 messages buffered and the feed ended: %s\n",
           fm_status_str(pst));
    fm_messages *ms = NULL;
    fm_status st = fm_subscription_next(pull, 100, 2000 * slow(), &ms);
    size_t n = st == FM_OK ? fm_messages_len(ms) : 0;
    CHECK_MSG(st == FM_OK && n == 5,
              "first next after the feed failed: %s with %zu messages (%s); want FM_OK with the 5 "
              "messages delivered before the failure",
              fm_status_str(st), n, st != FM_OK ? fm_last_error() : "");
    for (size_t i = 0; i < n; i++) {
        const fm_message *m = fm_messages_get(ms, i);
        char body[32];
        snprintf(body, sizeof body, "b-%zu", i);
        CHECK(m->offset == i && bytes_eq(m->payload, m->payload_len, body));
    }
    fm_messages_free(ms);
    ms = NULL;
    CHECK_ST(fm_subscription_next(pull, 100, 2000 * slow(), &ms), FM_ERR_DISCONNECTED);
    CHECK(ms == NULL);
    fm_client_close(c);
    CHECK_OK(fm_unsubscribe(cb));
    CHECK_OK(fm_unsubscribe(pull));
    seen_free(cs);
    testdir_done(&td);
}

/* fm_subscription_status: "FM_OK while a subscription or watch is healthy;
 * otherwise the status of the error that ended its feed". A pull
 * subscription whose feed gave up (nothing buffered) should say so without
 * a next call first, as a callback subscription does. */
KILL_TEST(pull_status_reports_an_ended_feed_without_next)
{
    struct testdir td;
    REQUIRE(testdir_make(&td, "pullst") == 0);
    struct broker b = {0, 0, ""};
    if (broker_start(&b, td.data, td.log) != 0) {
        harness_fail(__FILE__, __LINE__, "cannot start the broker (log %s)", td.log);
        return;
    }
    fm_client *c = connect_with(b.url, "50", "100", "0", "1");
    if (!c) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct seen *cs = seen_new(0, 0);
    REQUIRE(cs);
    fm_subscription *cb = NULL, *pull = NULL;
    CHECK_OK(fm_subscribe_pull(c, "pst", NULL, &pull));
    CHECK_OK(fm_subscribe(c, "pst", NULL, on_seen, cs, &cb));
    REQUIRE(cb && pull);
    broker_stop(&b, SIGKILL);
    int64_t at, killed = now_ms();
    CHECK_ST(wait_status_not_ok(cb, 10000 * slow(), &at), FM_ERR_DISCONNECTED);
    /* same schedule: give the pull feed the same time again, and more */
    fm_status st = wait_status_not_ok(pull, 2 * (at - killed) + 1000 * slow(), &at);
    CHECK_MSG(st == FM_ERR_DISCONNECTED,
              "pull subscription status %lld ms after kill -9, its feed ended, no next called: "
              "%s (a callback subscription on the same client reports FM_ERR_DISCONNECTED)",
              (long long)(at - killed), fm_status_str(st));
    fm_messages *ms = NULL;
    CHECK_ST(fm_subscription_next(pull, 10, 1000, &ms), FM_ERR_DISCONNECTED);
    CHECK_ST(fm_subscription_status(pull), FM_ERR_DISCONNECTED);
    fm_client_close(c);
    CHECK_OK(fm_unsubscribe(cb));
    CHECK_OK(fm_unsubscribe(pull));
    seen_free(cs);
    testdir_done(&td);
}

/* ---- unlimited attempts: survive kill -9 + restart ------------------------------ */

struct feeder {
    fm_client *c;
    volatile int stop;
    long sent, errors;
};

static void *feed(void *p)
{
    struct feeder *f = p;
    int64_t deadline = now_ms() + 30000 * slow();
    while (!f->stop && now_ms() < deadline) {
        char body[24];
        snprintf(body, sizeof body, "f-%ld", f->sent);
        fm_msg m = text_msg(body);
        if (fm_publish(f->c, "survive", &m, NULL) == FM_OK)
            f->sent++;
        else
            f->errors++, sleep_ms(20);
        sleep_ms(1);
    }
    return NULL;
}

static int bodies_match(struct seen *s, long from, long n, const char *prefix, long first_index)
{
    int bad = 0;
    pthread_mutex_lock(&s->mu);
    for (long i = from; i < from + n && i < s->n && i < MAX_SEEN; i++) {
        char want[24];
        snprintf(want, sizeof want, "%s-%ld", prefix, first_index + (i - from));
        if (strcmp(s->bodies[i], want) != 0 && bad++ < 3)
            harness_fail(__FILE__, __LINE__, "message #%ld is '%s', want '%s'", i, s->bodies[i],
                         want);
    }
    pthread_mutex_unlock(&s->mu);
    return bad;
}

KILL_TEST(subscription_survives_broker_kill_and_restart)
{
    enum { N = 100 };
    struct testdir td;
    REQUIRE(testdir_make(&td, "survive") == 0);
    struct broker b = {0, 0, ""};
    if (broker_start(&b, td.data, td.log) != 0) {
        harness_fail(__FILE__, __LINE__, "cannot start the broker (log %s)", td.log);
        return;
    }
    int base = thread_count();
    fm_client *c = connect_with(b.url, "50", "200", "20", "0");
    if (!c) {
        broker_stop(&b, SIGKILL);
        return;
    }
    struct seen *cs = seen_new(0, 0), *ps = seen_new(0, 0), *gs = seen_new(0, 0);
    REQUIRE(cs && ps && gs);
    fm_options *o = opts1("start", "earliest");
    fm_subscription *cb = NULL, *pull = NULL, *grp = NULL;
    CHECK_OK(fm_subscribe(c, "survive", o, on_seen, cs, &cb));
    CHECK_OK(fm_subscribe_pull(c, "survive", o, &pull));
    fm_options_free(o);
    o = opts1("group", "g"); /* auto_commit: resumes at committed + 1 on a restart too */
    CHECK_OK(fm_subscribe(c, "survive", o, on_seen, gs, &grp));
    fm_options_free(o);
    REQUIRE(cb && pull && grp);
    for (int i = 0; i < N; i++) {
        char body[24];
        snprintf(body, sizeof body, "p-%d", i);
        CHECK_OK(publish_retry(c, "survive", body, 0));
    }
    CHECK(waiter_wait(&cs->w, N, 10000 * slow()) == N);
    CHECK(waiter_wait(&gs->w, N, 10000 * slow()) == N);
    CHECK_OK(pull_into(pull, ps, N, 10000 * slow()));

    /* kill -9, stay down a moment (the feeds back off and retry), restart */
    broker_stop(&b, SIGKILL);
    sleep_ms(300);
    CHECK_OK(fm_subscription_status(cb)); /* reconnecting, not ended */
    CHECK_OK(fm_subscription_status(grp));
    fm_messages *ms = NULL;
    CHECK_OK(fm_subscription_next(pull, 10, 100, &ms));
    CHECK(fm_messages_len(ms) == 0);
    fm_messages_free(ms);
    int64_t t0 = now_ms();
    if (broker_restart(&b, td.data, td.log) != 0) {
        harness_fail(__FILE__, __LINE__, "cannot restart the broker on port %d (log %s)", b.port,
                     td.log);
        fm_client_close(c);
        fm_unsubscribe(cb);
        fm_unsubscribe(pull);
        fm_unsubscribe(grp);
        return;
    }
    printf("    broker restarted on port %d in %lld ms\n", b.port, (long long)(now_ms() - t0));
    /* published after the restart, by the same client (its unary calls
     * reconnect too) */
    t0 = now_ms();
    for (int i = N; i < 2 * N; i++) {
        char body[24];
        snprintf(body, sizeof body, "p-%d", i);
        fm_status st = publish_retry(c, "survive", body, 10000 * slow());
        if (st != FM_OK) {
            harness_fail(__FILE__, __LINE__, "publish #%d after the restart: %s (%s)", i,
                         fm_status_str(st), fm_last_error());
            break;
        }
    }
    CHECK_MSG(waiter_wait(&cs->w, 2 * N, 15000 * slow()) == 2 * N,
              "callback subscription: %ld of %d messages after the restart",
              waiter_get(&cs->w), 2 * N);
    CHECK_MSG(waiter_wait(&gs->w, 2 * N, 15000 * slow()) == 2 * N,
              "group subscription: %ld of %d messages after the restart", waiter_get(&gs->w),
              2 * N);
    CHECK_OK(pull_into(pull, ps, 2 * N, 15000 * slow()));
    printf("    all %d messages published after the restart delivered %lld ms after it\n", N,
           (long long)(now_ms() - t0));
    /* no duplicates: nothing more arrives */
    sleep_ms(300);
    ms = NULL;
    CHECK_OK(fm_subscription_next(pull, 10, 100, &ms));
    CHECK_MSG(fm_messages_len(ms) == 0, "pull: %zu extra messages", fm_messages_len(ms));
    fm_messages_free(ms);
    struct seen *all[3] = {cs, ps, gs};
    const char *names[3] = {"callback", "pull", "group"};
    for (int k = 0; k < 3; k++) {
        struct seen *s = all[k];
        pthread_mutex_lock(&s->mu);
        long n = s->n, ooo = s->out_of_order;
        char bad[160];
        snprintf(bad, sizeof bad, "%s", s->first_bad);
        pthread_mutex_unlock(&s->mu);
        CHECK_MSG(n == 2 * N, "%s subscription: %ld messages, want %d", names[k], n, 2 * N);
        CHECK_MSG(ooo == 0, "%s subscription: %ld out of order / duplicated (%s)", names[k], ooo,
                  bad);
        CHECK(bodies_match(s, 0, 2 * N, "p", 0) == 0);
    }
    CHECK_OK(fm_subscription_status(cb));
    CHECK_OK(fm_subscription_status(pull));
    CHECK_OK(fm_subscription_status(grp));
    uint64_t committed = 0;
    CHECK_OK(fm_get_offset(c, "survive", "g", 0, &committed));
    printf("    group committed offset %llu of %d\n", (unsigned long long)committed, 2 * N - 1);

    /* close during delivery: a feeder publishes, the callback is slow, kill
     * -9 and restart mid-stream, then close the subscriber while its callback
     * runs */
    CHECK_OK(fm_unsubscribe(pull));
    CHECK_OK(fm_unsubscribe(grp));
    pull = grp = NULL;
    fm_client *p = connect_with(b.url, "50", "200", "20", "0");
    REQUIRE(p);
    struct feeder f = {p, 0, 0, 0};
    pthread_mutex_lock(&cs->mu);
    cs->sleep_ms = 2;
    pthread_mutex_unlock(&cs->mu);
    pthread_t t;
    pthread_create(&t, NULL, feed, &f);
    long before = waiter_get(&cs->w);
    CHECK(waiter_wait(&cs->w, before + 20, 10000 * slow()) >= before + 20);
    broker_stop(&b, SIGKILL);
    sleep_ms(100);
    CHECK(broker_restart(&b, td.data, td.log) == 0);
    before = waiter_get(&cs->w);
    CHECK_MSG(waiter_wait(&cs->w, before + 20, 15000 * slow()) >= before + 20,
              "delivery did not resume after the second restart (%ld)", waiter_get(&cs->w) - before);
    /* close while a callback is inside */
    int64_t dl = now_ms() + 5000 * slow();
    for (;;) {
        pthread_mutex_lock(&cs->mu);
        int inside = cs->inside;
        pthread_mutex_unlock(&cs->mu);
        if (inside || now_ms() > dl)
            break;
        sleep_ms(1);
    }
    t0 = now_ms();
    fm_client_close(c);
    int64_t close_ms = now_ms() - t0;
    pthread_mutex_lock(&cs->mu);
    cs->closed = 1;
    int still = cs->inside;
    pthread_mutex_unlock(&cs->mu);
    CHECK_MSG(!still, "fm_client_close returned while a callback ran");
    CHECK_MSG(close_ms < 3000 * slow(), "close during delivery took %lld ms", (long long)close_ms);
    sleep_ms(200);
    f.stop = 1;
    pthread_join(t, NULL);
    pthread_mutex_lock(&cs->mu);
    CHECK_MSG(cs->after_close == 0, "%ld callbacks after close", cs->after_close);
    CHECK_MSG(cs->out_of_order == 0, "callback subscription over two restarts: %ld out of order "
              "or duplicated (%s)", cs->out_of_order, cs->first_bad);
    long total = cs->n;
    pthread_mutex_unlock(&cs->mu);
    printf("    feeder: %ld published, %ld failed while the broker was down; the subscriber saw "
           "%ld messages in order before its close (%lld ms)\n",
           f.sent, f.errors, total, (long long)close_ms);
    CHECK_OK(fm_unsubscribe(cb));
    fm_client_close(p);
    int t1 = wait_thread_count(base, 3000 * slow());
    CHECK_MSG(t1 == base, "threads %d before connect, %d after close", base, t1);
    broker_stop(&b, SIGTERM);
    seen_free(cs);
    seen_free(ps);
    seen_free(gs);
    testdir_done(&td);
}

/* ---- many restarts: no thread / fd growth; close while reconnecting ------------ */

KILL_TEST(many_broker_restarts_no_thread_or_fd_growth)
{
    long rounds = env_long("FM_TEST_RESTARTS", 200);
    struct testdir td;
    REQUIRE(testdir_make(&td, "restarts") == 0);
    struct broker b = {0, 0, ""};
    if (broker_start(&b, td.data, td.log) != 0) {
        harness_fail(__FILE__, __LINE__, "cannot start the broker (log %s)", td.log);
        return;
    }
    int base_threads = thread_count();
    int base_fds = fd_count();
    fm_client *c = connect_with(b.url, "10", "100", "10", "0");
    fm_client *p = c ? connect_with(b.url, "10", "100", "10", "0") : NULL;
    if (!p) {
        fm_client_close(c);
        broker_stop(&b, SIGKILL);
        return;
    }
    struct seen *cs = seen_new(0, 0), *ps = seen_new(0, 0);
    REQUIRE(cs && ps);
    fm_options *o = opts1("start", "earliest");
    fm_subscription *cb = NULL, *pull = NULL;
    CHECK_OK(fm_subscribe(c, "restarts", o, on_seen, cs, &cb));
    CHECK_OK(fm_subscribe_pull(c, "restarts", o, &pull));
    fm_options_free(o);
    REQUIRE(cb && pull);
    int warm_threads = -1, warm_fds = -1, max_threads = 0, max_fds = 0;
    int64_t t_start = now_ms();
    long r;
    for (r = 0; r < rounds; r++) {
        /* alternate kill -9 and a graceful stop (the broker ends the streams) */
        broker_stop(&b, r % 2 ? SIGTERM : SIGKILL);
        if (broker_restart(&b, td.data, td.log) != 0) {
            harness_fail(__FILE__, __LINE__, "round %ld: cannot restart the broker (log %s)", r,
                         td.log);
            break;
        }
        char body[24];
        snprintf(body, sizeof body, "r-%ld", r);
        fm_status st = publish_retry(p, "restarts", body, 10000 * slow());
        if (st != FM_OK) {
            harness_fail(__FILE__, __LINE__, "round %ld: publish: %s (%s)", r, fm_status_str(st),
                         fm_last_error());
            break;
        }
        if (waiter_wait(&cs->w, r + 1, 10000 * slow()) < r + 1) {
            harness_fail(__FILE__, __LINE__, "round %ld: the callback subscription did not "
                         "resume within 10 s", r);
            break;
        }
        if (pull_into(pull, ps, r + 1, 10000 * slow()) != FM_OK || waiter_get(&ps->w) < r + 1) {
            harness_fail(__FILE__, __LINE__, "round %ld: the pull subscription did not resume "
                         "(%s)", r, fm_last_error());
            break;
        }
        int th = thread_count(), fds = fd_count();
        if (r == 4) {
            warm_threads = th;
            warm_fds = fds;
        }
        if (r >= 4) {
            max_threads = th > max_threads ? th : max_threads;
            max_fds = fds > max_fds ? fds : max_fds;
        }
    }
    int end_threads = wait_thread_count(warm_threads, 2000 * slow());
    int end_fds = fd_count();
    printf("    %ld restarts in %lld ms; threads %d -> %d after 5 rounds -> %d at the end (max "
           "%d); fds %d -> %d -> %d (max %d)\n",
           r, (long long)(now_ms() - t_start), base_threads, warm_threads, end_threads,
           max_threads, base_fds, warm_fds, end_fds, max_fds);
    if (r == rounds && rounds > 5) {
        CHECK_MSG(end_threads <= warm_threads + 2, "threads grew from %d to %d over %ld restarts",
                  warm_threads, end_threads, rounds - 5);
        CHECK_MSG(end_fds <= warm_fds + 4, "fds grew from %d to %d over %ld restarts", warm_fds,
                  end_fds, rounds - 5);
    }
    sleep_ms(100);
    pthread_mutex_lock(&cs->mu);
    CHECK_MSG(cs->n == r && cs->out_of_order == 0, "callback: %ld messages for %ld rounds, %ld "
              "out of order (%s)", cs->n, r, cs->out_of_order, cs->first_bad);
    pthread_mutex_unlock(&cs->mu);
    CHECK_MSG(ps->n == r && ps->out_of_order == 0, "pull: %ld messages for %ld rounds, %ld out of "
              "order (%s)", ps->n, r, ps->out_of_order, ps->first_bad);
    CHECK(bodies_match(cs, 0, r, "r", 0) == 0);
    CHECK(bodies_match(ps, 0, r, "r", 0) == 0);

    /* the broker goes away for good: close while the feeds are reconnecting */
    broker_stop(&b, SIGKILL);
    sleep_ms(200);
    CHECK_OK(fm_subscription_status(cb));
    int64_t t0 = now_ms();
    fm_client_close(c);
    int64_t close_ms = now_ms() - t0;
    CHECK_MSG(close_ms < 2000 * slow(), "close while reconnecting took %lld ms",
              (long long)close_ms);
    fm_messages *ms = NULL;
    CHECK_ST(fm_subscription_next(pull, 10, 1000, &ms), FM_ERR_CLOSED);
    CHECK_OK(fm_unsubscribe(cb));
    CHECK_OK(fm_unsubscribe(pull));
    t0 = now_ms();
    fm_client_close(p);
    CHECK_MSG(now_ms() - t0 < 2000 * slow(), "publisher close with the broker gone took %lld ms",
              (long long)(now_ms() - t0));
    int t1 = wait_thread_count(base_threads, 3000 * slow());
    CHECK_MSG(t1 == base_threads, "threads %d before connect, %d after close", base_threads, t1);
    int f1 = fd_count();
    CHECK_MSG(f1 <= base_fds, "fds %d before connect, %d after close", base_fds, f1);
    seen_free(cs);
    seen_free(ps);
    testdir_done(&td);
}
