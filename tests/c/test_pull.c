/* test_pull.c - pull subscriptions (fm_subscribe_pull, fm_subscription_next),
 * fm_subscription_status and the reconnect_* connect options. Core tests:
 * they run on mem:// and against the broker passes of run.sh. The broker
 * kill / restart cases are in test_reconnect.c. */
#include "harness.h"

#include <unistd.h>

static const int INV = FM_ERR_INVALID_ARGUMENT;

static fm_options *opts1(const char *k, const char *v)
{
    fm_options *o = fm_options_new();
    if (o && fm_options_set(o, k, v) != FM_OK) {
        harness_fail(__FILE__, __LINE__, "fm_options_set(%s, %s): %s", k, v, fm_last_error());
    }
    return o;
}

static int publish_n(fm_client *c, const char *stream, const char *prefix, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char body[64];
        snprintf(body, sizeof body, "%s-%d", prefix, i);
        fm_msg m = text_msg(body);
        fm_status st = fm_publish(c, stream, &m, NULL);
        if (st != FM_OK) {
            harness_fail(__FILE__, __LINE__, "publish %s #%d: %s (%s)", stream, i,
                         fm_status_str(st), fm_last_error());
            return -1;
        }
    }
    return 0;
}

/* ---- batches, order, max --------------------------------------------------- */

CORE_TEST(pull_batches_in_order_with_max_respected)
{
    enum { N = 25, MAX = 7 };
    fm_client *c = test_client();
    REQUIRE(c);
    if (publish_n(c, "pull", "m", 0, N) != 0) {
        fm_client_close(c);
        return;
    }
    fm_options *o = opts1("start", "earliest");
    fm_subscription *sub = NULL;
    fm_status st = fm_subscribe_pull(c, "pull", o, &sub);
    fm_options_free(o);
    CHECK_OK(st);
    if (st != FM_OK) {
        fm_client_close(c);
        return;
    }
    CHECK_OK(fm_subscription_status(sub));
    /* let the feed buffer everything, so a full batch is available */
    sleep_ms(200 + 100 * slow());
    char full[128];
    qualified(full, sizeof full, "pull");
    int got = 0, batches = 0, full_batches = 0, bad = 0;
    int64_t deadline = now_ms() + 10000 * slow();
    while (got < N && now_ms() < deadline) {
        fm_messages *ms = NULL;
        st = fm_subscription_next(sub, MAX, 2000 * slow(), &ms);
        if (st != FM_OK) {
            harness_fail(__FILE__, __LINE__, "next after %d messages: %s (%s)", got,
                         fm_status_str(st), fm_last_error());
            break;
        }
        CHECK(ms != NULL);
        size_t n = fm_messages_len(ms);
        CHECK_MSG(n <= MAX, "a batch of %zu messages with max_messages=%d", n, MAX);
        batches += n > 0;
        full_batches += n == MAX;
        for (size_t i = 0; i < n; i++) {
            const fm_message *m = fm_messages_get(ms, i);
            char body[64];
            snprintf(body, sizeof body, "m-%d", got);
            if ((m->offset != (uint64_t)got || m->partition != 0 ||
                 !bytes_eq(m->payload, m->payload_len, body) || strcmp(m->stream, full) != 0) &&
                bad++ < 3)
                harness_fail(__FILE__, __LINE__,
                             "message %d: %s/%u@%llu '%.*s' (want %s/0@%d '%s')", got, m->stream,
                             m->partition, (unsigned long long)m->offset, (int)m->payload_len,
                             (const char *)m->payload, full, got, body);
            got++;
        }
        CHECK(fm_messages_get(ms, n) == NULL);
        fm_messages_free(ms);
    }
    CHECK_MSG(got == N, "%d of %d messages pulled", got, N);
    CHECK_MSG(full_batches >= 3, "only %d of %d batches were full (max %d) with all %d buffered",
              full_batches, batches, MAX, N);
    /* nothing more: an empty batch */
    fm_messages *ms = NULL;
    CHECK_OK(fm_subscription_next(sub, MAX, 50, &ms));
    CHECK(ms != NULL && fm_messages_len(ms) == 0);
    fm_messages_free(ms);
    CHECK_OK(fm_subscription_status(sub));
    CHECK_OK(fm_unsubscribe(sub));
    fm_client_close(c);
}

static uint32_t key_partition[8];

CORE_TEST(pull_all_partitions_keep_per_partition_order)
{
    enum { N = 60, KEYS = 6 };
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = opts1("partitions", "3");
    CHECK_OK(fm_stream_create(c, "pull3", o));
    fm_options_free(o);
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull3", NULL, &sub)); /* start: latest */
    /* key k goes to one partition; per key, bodies count up */
    for (int i = 0; i < N; i++) {
        char key[8], body[32];
        snprintf(key, sizeof key, "k%d", i % KEYS);
        snprintf(body, sizeof body, "%d", i / KEYS);
        fm_msg m = text_msg(body);
        m.key = (const uint8_t *)key;
        m.key_len = strlen(key);
        fm_position pos;
        CHECK_OK(fm_publish(c, "pull3", &m, &pos));
        key_partition[i % KEYS] = pos.partition;
    }
    int next_of_key[KEYS] = {0};
    long last_offset[3] = {-1, -1, -1};
    int got = 0, bad = 0;
    int64_t deadline = now_ms() + 10000 * slow();
    while (got < N && now_ms() < deadline) {
        fm_messages *ms = NULL;
        fm_status st = fm_subscription_next(sub, 16, 1000 * slow(), &ms);
        if (st != FM_OK) {
            harness_fail(__FILE__, __LINE__, "next: %s (%s)", fm_status_str(st), fm_last_error());
            break;
        }
        for (size_t i = 0; i < fm_messages_len(ms); i++, got++) {
            const fm_message *m = fm_messages_get(ms, i);
            int k = m->key_len == 2 && m->key[0] == 'k' ? m->key[1] - '0' : -1;
            char want[32];
            snprintf(want, sizeof want, "%d", k >= 0 && k < KEYS ? next_of_key[k] : -1);
            if (k < 0 || k >= KEYS || m->partition >= 3 || m->partition != key_partition[k] ||
                (long)m->offset <= last_offset[m->partition] ||
                !bytes_eq(m->payload, m->payload_len, want)) {
                if (bad++ < 3)
                    harness_fail(__FILE__, __LINE__, "message %d: partition %u offset %llu '%.*s'",
                                 got, m->partition, (unsigned long long)m->offset,
                                 (int)m->payload_len, (const char *)m->payload);
                continue;
            }
            last_offset[m->partition] = (long)m->offset;
            next_of_key[k]++;
        }
        fm_messages_free(ms);
    }
    CHECK_MSG(got == N, "%d of %d messages pulled", got, N);
    CHECK_OK(fm_unsubscribe(sub));
    fm_client_close(c);
}

/* ---- timeouts --------------------------------------------------------------- */

struct late_pub {
    fm_client *c;
    long delay_ms;
};

static void *publish_late(void *p)
{
    struct late_pub *lp = p;
    sleep_ms(lp->delay_ms);
    fm_msg m = text_msg("late");
    fm_status st = fm_publish(lp->c, "pull-to", &m, NULL);
    if (st != FM_OK)
        harness_fail(__FILE__, __LINE__, "late publish: %s", fm_status_str(st));
    return NULL;
}

CORE_TEST(pull_timeout_returns_ok_and_an_empty_list)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull-to", NULL, &sub));
    fm_messages *ms = (fm_messages *)1; /* must be overwritten */
    int64_t t0 = now_ms();
    CHECK_OK(fm_subscription_next(sub, 10, 200, &ms));
    int64_t dt = now_ms() - t0;
    CHECK_MSG(ms != NULL && ms != (fm_messages *)1, "timeout: *out not set to an empty list");
    if (ms != (fm_messages *)1) {
        CHECK(fm_messages_len(ms) == 0);
        CHECK(fm_messages_get(ms, 0) == NULL);
        fm_messages_free(ms);
    }
    CHECK_MSG(dt >= 190, "next(timeout 200 ms) returned after %lld ms", (long long)dt);
    CHECK_MSG(dt < 2000 * slow(), "next(timeout 200 ms) took %lld ms", (long long)dt);

    /* timeout 0: returns at once */
    ms = NULL;
    t0 = now_ms();
    CHECK_OK(fm_subscription_next(sub, 10, 0, &ms));
    dt = now_ms() - t0;
    CHECK(ms != NULL && fm_messages_len(ms) == 0);
    fm_messages_free(ms);
    CHECK_MSG(dt < 500 * slow(), "next(timeout 0) took %lld ms", (long long)dt);

    /* a waiting next wakes up when a message arrives (no polling period) */
    struct late_pub lp = {c, 150}; /* another thread, same (thread-safe) client */
    pthread_t t;
    pthread_create(&t, NULL, publish_late, &lp);
    ms = NULL;
    t0 = now_ms();
    CHECK_OK(fm_subscription_next(sub, 10, 10000 * slow(), &ms));
    dt = now_ms() - t0;
    pthread_join(t, NULL);
    CHECK_MSG(fm_messages_len(ms) == 1, "woke up with %zu messages", fm_messages_len(ms));
    if (fm_messages_len(ms) == 1) {
        const fm_message *m = fm_messages_get(ms, 0);
        CHECK(bytes_eq(m->payload, m->payload_len, "late"));
    }
    fm_messages_free(ms);
    CHECK_MSG(dt >= 100 && dt < 3000 * slow(),
              "next woke %lld ms after it started (publish at 150 ms)", (long long)dt);
    CHECK_OK(fm_unsubscribe(sub));
    fm_client_close(c);
}

/* ---- arguments -------------------------------------------------------------- */

CORE_TEST(pull_null_and_invalid_arguments)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_subscription *sub = (fm_subscription *)1;
    CHECK_ST(fm_subscribe_pull(NULL, "s", NULL, &sub), INV);
    CHECK(sub == NULL);
    sub = (fm_subscription *)1;
    CHECK_ST(fm_subscribe_pull(c, NULL, NULL, &sub), INV);
    CHECK(sub == NULL);
    CHECK_ST(fm_subscribe_pull(c, "s", NULL, NULL), INV);
    sub = (fm_subscription *)1;
    CHECK_ST(fm_subscribe_pull(c, "bad name", NULL, &sub), INV);
    CHECK(sub == NULL);
    sub = NULL;
    CHECK_ST(fm_subscribe_pull(c, "..", NULL, &sub), INV);
    CHECK(sub == NULL);
    const char bad_utf8[] = {'s', (char)0xff, 0};
    CHECK_ST(fm_subscribe_pull(c, bad_utf8, NULL, &sub), INV);
    CHECK(sub == NULL);
    /* an option that is not a subscribe option */
    fm_options *o = opts1("partitions", "2");
    CHECK_ST(fm_subscribe_pull(c, "s", o, &sub), INV);
    CHECK(sub == NULL);
    fm_options_free(o);
    o = opts1("reconnect_initial_ms", "10");
    CHECK_ST(fm_subscribe_pull(c, "s", o, &sub), INV);
    CHECK(sub == NULL);
    fm_options_free(o);
    /* start=committed without a group */
    o = opts1("start", "committed");
    fm_status st = fm_subscribe_pull(c, "s", o, &sub);
    CHECK_MSG(st == INV, "start=committed without a group: %s", fm_status_str(st));
    fm_options_free(o);
    if (st == FM_OK)
        fm_unsubscribe(sub);
    sub = NULL;

    /* fm_subscription_next / fm_subscription_status */
    fm_messages *ms = (fm_messages *)1;
    CHECK_ST(fm_subscription_next(NULL, 1, 0, &ms), INV);
    CHECK(ms == NULL);
    CHECK_ST(fm_subscription_status(NULL), INV);
    CHECK(strlen(fm_last_error()) > 0);
    REQUIRE_OK(fm_subscribe_pull(c, "s", NULL, &sub));
    CHECK_ST(fm_subscription_next(sub, 1, 0, NULL), INV);
    /* the subscription still works after the rejected calls */
    CHECK_OK(fm_subscription_next(sub, 1, 0, &ms));
    CHECK(fm_messages_len(ms) == 0);
    fm_messages_free(ms);
    CHECK_OK(fm_subscription_status(sub));
    CHECK_OK(fm_unsubscribe(sub));
    CHECK_OK(fm_unsubscribe(NULL));
    fm_client_close(c);
}

/* The header: "Takes up to max_messages (>= 1)". fm_queue_receive rejects
 * max_jobs 0 with FM_ERR_INVALID_ARGUMENT; next should too, not hand out a
 * message nobody asked for. */
CORE_TEST(pull_next_max_messages_zero_is_invalid)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = opts1("start", "earliest");
    fm_subscription *sub = NULL;
    fm_status st = fm_subscribe_pull(c, "pull0", o, &sub);
    fm_options_free(o);
    REQUIRE_OK(st);
    publish_n(c, "pull0", "z", 0, 3);
    sleep_ms(100 * slow());
    fm_messages *ms = (fm_messages *)1;
    st = fm_subscription_next(sub, 0, 100, &ms);
    CHECK_MSG(st == INV, "next(max_messages 0): %s with %zu messages", fm_status_str(st),
              st == FM_OK ? fm_messages_len(ms) : (size_t)0);
    CHECK(st == FM_OK || ms == NULL);
    if (st == FM_OK)
        fm_messages_free(ms);
    /* whatever happened, no message is lost: the rest comes in order */
    uint64_t want = st == FM_OK ? 1 : 0;
    ms = NULL;
    CHECK_OK(fm_subscription_next(sub, 10, 2000 * slow(), &ms));
    CHECK(fm_messages_len(ms) >= 1 && fm_messages_get(ms, 0)->offset == want);
    fm_messages_free(ms);
    CHECK_OK(fm_unsubscribe(sub));
    fm_client_close(c);
}

/* ---- next on a callback subscription / watch; status while healthy ---------- */

static void count_msg(void *ud, const fm_message *m)
{
    (void)m;
    waiter_add(ud, 1);
}

static void count_kv_ev(void *ud, fm_kv_op op, const char *k, const uint8_t *v, size_t n,
                        uint64_t r)
{
    (void)op; (void)k; (void)v; (void)n; (void)r;
    waiter_add(ud, 1);
}

CORE_TEST(next_on_a_callback_subscription_or_watch_is_invalid)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct waiter w, kw;
    waiter_init(&w);
    waiter_init(&kw);
    fm_subscription *sub = NULL, *watch = NULL, *pull = NULL;
    REQUIRE_OK(fm_subscribe(c, "cbsub", NULL, count_msg, &w, &sub));
    REQUIRE_OK(fm_kv_watch(c, "cbkv", "", count_kv_ev, &kw, &watch));
    REQUIRE_OK(fm_subscribe_pull(c, "cbsub", NULL, &pull));
    fm_messages *ms = (fm_messages *)1;
    CHECK_ST(fm_subscription_next(sub, 10, 0, &ms), INV);
    CHECK(ms == NULL);
    ms = (fm_messages *)1;
    int64_t t0 = now_ms();
    CHECK_ST(fm_subscription_next(watch, 10, 5000, &ms), INV);
    CHECK_MSG(now_ms() - t0 < 1000 * slow(), "next on a watch waited %lld ms",
              (long long)(now_ms() - t0));
    CHECK(ms == NULL);

    /* healthy: FM_OK, before and after deliveries */
    CHECK_OK(fm_subscription_status(sub));
    CHECK_OK(fm_subscription_status(watch));
    CHECK_OK(fm_subscription_status(pull));
    publish_n(c, "cbsub", "x", 0, 5);
    CHECK_OK(fm_kv_set(c, "cbkv", "a", (const uint8_t *)"1", 1, 0, NULL));
    CHECK(waiter_wait(&w, 5, 5000 * slow()) == 5);
    CHECK(waiter_wait(&kw, 1, 5000 * slow()) == 1);
    size_t pulled = 0;
    int64_t deadline = now_ms() + 5000 * slow();
    while (pulled < 5 && now_ms() < deadline) {
        ms = NULL;
        CHECK_OK(fm_subscription_next(pull, 10, 500, &ms));
        pulled += fm_messages_len(ms);
        fm_messages_free(ms);
    }
    CHECK(pulled == 5);
    CHECK_OK(fm_subscription_status(sub));
    CHECK_OK(fm_subscription_status(watch));
    CHECK_OK(fm_subscription_status(pull));
    /* the callback subscription keeps working after the rejected next */
    CHECK(waiter_get(&w) == 5);
    CHECK_OK(fm_unsubscribe(sub));
    CHECK_OK(fm_unsubscribe(watch));
    CHECK_OK(fm_unsubscribe(pull));
    fm_client_close(c);
    waiter_destroy(&w);
    waiter_destroy(&kw);
}

/* ---- after fm_client_close ---------------------------------------------------- */

struct blocked_next {
    fm_subscription *sub;
    fm_status st;
    size_t n;
    int64_t returned_at;
};

static void *next_blocked(void *p)
{
    struct blocked_next *b = p;
    fm_messages *ms = NULL;
    b->st = fm_subscription_next(b->sub, 10, 30000, &ms);
    b->returned_at = now_ms();
    b->n = fm_messages_len(ms);
    fm_messages_free(ms);
    return NULL;
}

CORE_TEST(pull_after_close_is_closed_and_unsubscribe_frees)
{
    int base = thread_count();
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = opts1("start", "earliest");
    fm_subscription *sub = NULL, *idle = NULL;
    CHECK_OK(fm_subscribe_pull(c, "pull-close", o, &sub));
    CHECK_OK(fm_subscribe_pull(c, "pull-close", o, &idle)); /* never pulled from */
    fm_options_free(o);
    REQUIRE(sub && idle);
    publish_n(c, "pull-close", "c", 0, 5);
    fm_messages *ms = NULL;
    CHECK_OK(fm_subscription_next(sub, 2, 2000 * slow(), &ms));
    CHECK(fm_messages_len(ms) >= 1);
    fm_messages_free(ms);
    /* three messages are still buffered in sub, five in idle */
    sleep_ms(100 * slow());
    int64_t t0 = now_ms();
    fm_client_close(c);
    int64_t close_ms = now_ms() - t0;
    CHECK_MSG(close_ms < 2000 * slow(), "close with pull subscriptions open took %lld ms",
              (long long)close_ms);

    ms = (fm_messages *)1;
    t0 = now_ms();
    CHECK_ST(fm_subscription_next(sub, 10, 5000, &ms), FM_ERR_CLOSED);
    CHECK(ms == NULL);
    CHECK_ST(fm_subscription_next(idle, 10, 0, &ms), FM_ERR_CLOSED);
    CHECK_MSG(now_ms() - t0 < 1000 * slow(), "next after close took %lld ms",
              (long long)(now_ms() - t0));
    fm_status st = fm_subscription_status(sub);
    printf("    fm_subscription_status after close: %s\n", fm_status_str(st));
    CHECK(st == FM_OK || st == FM_ERR_CLOSED);
    CHECK_OK(fm_unsubscribe(sub));  /* just frees (ASan / valgrind check it) */
    CHECK_OK(fm_unsubscribe(idle));
    int t1 = wait_thread_count(base, 3000 * slow());
    CHECK_MSG(t1 == base, "threads %d before connect, %d after close + unsubscribe", base, t1);
}

/* fm_client_close "joins every library thread"; pull subscription handles
 * stay valid until fm_unsubscribe, but should not keep library threads
 * running. */
CORE_TEST(close_joins_threads_with_pull_handles_open)
{
    int base = thread_count();
    fm_client *c = test_client();
    REQUIRE(c);
    fm_subscription *sub = NULL;
    CHECK_OK(fm_subscribe_pull(c, "pull-threads", NULL, &sub));
    fm_client_close(c);
    int t_closed = wait_thread_count(base, 300 * slow());
    CHECK_MSG(t_closed == base,
              "threads: %d before connect, %d after fm_client_close with a pull subscription "
              "handle not yet freed", base, t_closed);
    CHECK_OK(fm_unsubscribe(sub));
    int t1 = wait_thread_count(base, 3000 * slow());
    CHECK_MSG(t1 == base, "threads %d before connect, %d after fm_unsubscribe", base, t1);
}

/* A next blocked waiting for messages returns FM_ERR_CLOSED when another
 * thread closes the client (as BUG 1's reserve/receive now do). */
CORE_TEST(close_wakes_a_blocked_next)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull-wake", NULL, &sub));
    struct blocked_next b = {sub, -1, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, next_blocked, &b);
    sleep_ms(150 * slow());
    int64_t t0 = now_ms();
    fm_client_close(c);
    int64_t close_ms = now_ms() - t0;
    pthread_join(t, NULL);
    CHECK_ST(b.st, FM_ERR_CLOSED);
    CHECK_MSG(b.returned_at - t0 < 2000 * slow(), "the blocked next returned %lld ms after close",
              (long long)(b.returned_at - t0));
    CHECK_MSG(close_ms < 2000 * slow(), "close took %lld ms", (long long)close_ms);
    CHECK_OK(fm_unsubscribe(sub));
}

/* With a group and auto_commit, the batch a next returned is committed by the
 * following next; a next after close must not try to commit through the
 * stopped client (no hang, no panic) and unsubscribe still frees. */
CORE_TEST(pull_group_auto_commit_then_close)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = opts1("group", "g");
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull-gc", o, &sub));
    fm_options_free(o);
    publish_n(c, "pull-gc", "g", 0, 4);
    fm_messages *ms = NULL;
    CHECK_OK(fm_subscription_next(sub, 2, 2000 * slow(), &ms));
    CHECK(fm_messages_len(ms) >= 1);
    fm_messages_free(ms);
    fm_client_close(c);
    int64_t t0 = now_ms();
    ms = (fm_messages *)1;
    CHECK_ST(fm_subscription_next(sub, 10, 1000, &ms), FM_ERR_CLOSED);
    CHECK(ms == NULL);
    CHECK_MSG(now_ms() - t0 < 2000 * slow(), "next after close (with a commit pending) took %lld ms",
              (long long)(now_ms() - t0));
    CHECK_OK(fm_unsubscribe(sub));
}

/* ---- auto_commit in pull mode ------------------------------------------------ */

static long get_off(fm_client *c, const char *stream, const char *group)
{
    uint64_t off = 0;
    fm_status st = fm_get_offset(c, stream, group, 0, &off);
    if (st == FM_ERR_NOT_FOUND)
        return -1;
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "fm_get_offset: %s (%s)", fm_status_str(st),
                     fm_last_error());
        return -2;
    }
    return (long)off;
}

/* One next; the first and last offsets of the batch (-1 if empty). */
static size_t pull_batch(fm_subscription *sub, size_t max, long timeout_ms, long *first,
                         long *last)
{
    fm_messages *ms = NULL;
    fm_status st = fm_subscription_next(sub, max, timeout_ms * slow(), &ms);
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "next: %s (%s)", fm_status_str(st), fm_last_error());
        return 0;
    }
    size_t n = fm_messages_len(ms);
    *first = n ? (long)fm_messages_get(ms, 0)->offset : -1;
    *last = n ? (long)fm_messages_get(ms, n - 1)->offset : -1;
    fm_messages_free(ms);
    return n;
}

CORE_TEST(pull_auto_commit_commits_what_the_previous_next_returned)
{
    fm_client *c = test_client();
    REQUIRE(c);
    publish_n(c, "pull-ac", "a", 0, 10);
    fm_options *o = opts1("group", "g1"); /* start committed (= earliest), auto_commit on */
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull-ac", o, &sub));
    fm_options_free(o);
    /* A call returns what the feed has buffered so far (1 to 4 here), so
     * check the rule on whatever batches come: after each call the committed
     * offset is the last one the previous non-empty call returned. */
    long first, last;
    size_t n;
    long expect = 0, returned_before = -1;
    for (int calls = 0; expect < 10 && calls < 100; calls++) {
        n = pull_batch(sub, 4, 2000, &first, &last);
        long committed = get_off(c, "pull-ac", "g1");
        CHECK_MSG(committed == returned_before, "call %d: committed %ld, want %ld (what the previous call returned)",
                  calls, committed, returned_before);
        if (n == 0)
            continue;
        CHECK_MSG(n <= 4 && first == expect && last == first + (long)n - 1, "call %d: %zu messages %ld..%ld, want from %ld",
                  calls, n, first, last, expect);
        expect = last + 1;
        returned_before = last;
    }
    CHECK_MSG(expect == 10, "got offsets 0..%ld of 0..9", expect - 1);
    /* an empty next (timeout) commits the last batch */
    n = pull_batch(sub, 4, 100, &first, &last);
    CHECK(n == 0);
    CHECK_MSG(get_off(c, "pull-ac", "g1") == 9, "after the empty next the committed offset is %ld",
              get_off(c, "pull-ac", "g1"));
    /* and the empty batch commits nothing new (no regression) */
    n = pull_batch(sub, 4, 100, &first, &last);
    CHECK(n == 0);
    CHECK(get_off(c, "pull-ac", "g1") == 9);
    CHECK_OK(fm_unsubscribe(sub));

    /* unsubscribe right after a batch: is that batch committed? (callback
     * subscriptions commit at unsubscribe; the pull docs only promise "the
     * next call commits what the previous one returned") */
    {
        fm_client *c2 = c;
        fm_options *o3 = opts1("group", "g3");
        CHECK_OK(fm_options_set(o3, "start", "earliest"));
        fm_subscription *s3 = NULL;
        if (fm_subscribe_pull(c2, "pull-ac", o3, &s3) == FM_OK) {
            n = pull_batch(s3, 4, 1000, &first, &last);
            CHECK_OK(fm_unsubscribe(s3));
            long g3 = get_off(c2, "pull-ac", "g3");
            printf("    pull, group g3: next returned %ld..%ld, then fm_unsubscribe: committed %ld "
                   "(-1 = nothing)\n", first, last, g3);
            CHECK(g3 == -1 || g3 == last);
        }
        fm_options_free(o3);
    }

    /* the group resumes after the committed offset */
    publish_n(c, "pull-ac", "a", 10, 2);
    o = opts1("group", "g1");
    sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull-ac", o, &sub));
    fm_options_free(o);
    n = pull_batch(sub, 10, 1000, &first, &last);
    CHECK_MSG(n >= 1 && first == 10, "resumed at %ld (%zu messages), want 10", first, n);
    CHECK_OK(fm_unsubscribe(sub));

    /* auto_commit=false: nothing is committed */
    o = opts1("group", "g2");
    CHECK_OK(fm_options_set(o, "auto_commit", "false"));
    CHECK_OK(fm_options_set(o, "start", "earliest"));
    sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "pull-ac", o, &sub));
    fm_options_free(o);
    size_t total = 0;
    /* Bounded in time, not in calls: on a busy machine a batch may hold
       only the messages that had arrived by then. */
    int64_t until = now_ms() + 30000 * slow();
    for (int i = 0; i < 1000 && total < 12 && now_ms() < until; i++)
        total += pull_batch(sub, 5, 1000, &first, &last);
    total += pull_batch(sub, 5, 100, &first, &last); /* empty: would commit the last batch */
    CHECK_MSG(total == 12, "pulled %zu of 12", total);
    CHECK_MSG(get_off(c, "pull-ac", "g2") == -1, "auto_commit=false committed %ld",
              get_off(c, "pull-ac", "g2"));
    CHECK_OK(fm_unsubscribe(sub));
    CHECK_MSG(get_off(c, "pull-ac", "g2") == -1, "auto_commit=false: unsubscribe committed %ld",
              get_off(c, "pull-ac", "g2"));
    fm_client_close(c);
}

/* ---- reconnect options ------------------------------------------------------- */

CORE_TEST(reconnect_options_validated)
{
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"reconnect_multiplier", "0.5"},  {"reconnect_multiplier", "abc"},
        {"reconnect_multiplier", "0"},    {"reconnect_multiplier", "-2"},
        {"reconnect_multiplier", "nan"},  {"reconnect_multiplier", "inf"},
        {"reconnect_multiplier", ""},     {"reconnect_multiplier", "2x"},
        {"reconnect_initial_ms", "abc"},  {"reconnect_initial_ms", "-1"},
        {"reconnect_max_ms", "1.5"},      {"reconnect_jitter_ms", "x"},
        {"max_reconnect_attempts", "-1"}, {"max_reconnect_attempts", "many"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_options *o = fm_options_new();
        REQUIRE(o);
        fm_status st = fm_options_set(o, bad[i].key, bad[i].value);
        fm_client *c = NULL;
        if (st == FM_OK) /* the check may also come at connect */
            st = fm_client_connect(test_url(), o, &c);
        CHECK_MSG(st == INV, "%s=\"%s\": %s", bad[i].key, bad[i].value, fm_status_str(st));
        CHECK(c == NULL);
        if (c)
            fm_client_close(c);
        fm_options_free(o);
    }
    /* good values connect (on every engine: they only matter for a broker) */
    fm_options *o = fm_options_new();
    REQUIRE(o);
    CHECK_OK(fm_options_set(o, "reconnect_initial_ms", "10"));
    CHECK_OK(fm_options_set(o, "reconnect_max_ms", "200"));
    CHECK_OK(fm_options_set(o, "reconnect_multiplier", "1"));
    CHECK_OK(fm_options_set(o, "reconnect_multiplier", "1.5"));
    CHECK_OK(fm_options_set(o, "reconnect_jitter_ms", "0"));
    CHECK_OK(fm_options_set(o, "max_reconnect_attempts", "3"));
    fm_client *c = test_client_opts(o);
    fm_options_free(o);
    REQUIRE(c);
    CHECK_OK(fm_client_health(c));
    /* connect options are not subscribe options */
    o = opts1("max_reconnect_attempts", "1");
    fm_subscription *sub = NULL;
    CHECK_ST(fm_subscribe_pull(c, "s", o, &sub), INV);
    CHECK_ST(fm_subscribe(c, "s", o, count_msg, NULL, &sub), INV);
    CHECK(sub == NULL);
    fm_options_free(o);
    fm_client_close(c);
}
