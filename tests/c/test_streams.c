/* test_streams.c - publish, batch, async + flush, read, stream create,
 * offsets, subscriptions (threads, order, groups, unsubscribe in callback). */
#include "harness.h"

/* ---- publish / read --------------------------------------------------- */

CORE_TEST(publish_and_read_roundtrip)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_header hs[2] = {{"content-type", "text/plain"}, {"trace", "abc"}};
    const char *key = "user-7";
    for (int i = 0; i < 5; i++) {
        char body[32];
        snprintf(body, sizeof body, "msg-%d", i);
        fm_msg m = text_msg(body);
        m.key = (const uint8_t *)key;
        m.key_len = strlen(key);
        m.headers = hs;
        m.headers_len = 2;
        fm_position pos = {99, 99};
        REQUIRE_OK(fm_publish(c, "events", &m, &pos));
        CHECK(pos.partition == 0);
        CHECK_MSG(pos.offset == (uint64_t)i, "offset %llu, expected %d",
                  (unsigned long long)pos.offset, i);
    }
    char events[300];
    qualified(events, sizeof events, "events"); /* default/default/events on mem:// */
    fm_messages *ms = NULL;
    int64_t t0 = (int64_t)time(NULL) * 1000;
    REQUIRE_OK(fm_read(c, "events", 0, 1, 3, &ms));
    REQUIRE(ms != NULL);
    CHECK(fm_messages_len(ms) == 3);
    for (size_t i = 0; i < fm_messages_len(ms); i++) {
        const fm_message *m = fm_messages_get(ms, i);
        REQUIRE(m);
        char body[32];
        snprintf(body, sizeof body, "msg-%zu", i + 1);
        CHECK(m->offset == i + 1);
        CHECK(m->partition == 0);
        CHECK(bytes_eq(m->payload, m->payload_len, body));
        CHECK(bytes_eq(m->key, m->key_len, key));
        CHECK_MSG(strcmp(m->stream, events) == 0, "stream %s, expected %s", m->stream, events);
        CHECK(m->timestamp_ms > t0 - 60000 && m->timestamp_ms < t0 + 60000);
        REQUIRE(m->headers_len == 2);
        CHECK(strcmp(m->headers[0].key, "content-type") == 0);
        CHECK(strcmp(m->headers[0].value, "text/plain") == 0);
        CHECK(strcmp(m->headers[1].key, "trace") == 0);
        CHECK(strcmp(m->headers[1].value, "abc") == 0);
    }
    CHECK(fm_messages_get(ms, 3) == NULL);
    CHECK(fm_messages_get(ms, SIZE_MAX) == NULL);
    fm_messages_free(ms);

    /* at the end: FM_OK with 0 messages */
    ms = NULL;
    CHECK_OK(fm_read(c, "events", 0, 5, 10, &ms));
    CHECK(ms != NULL && fm_messages_len(ms) == 0);
    fm_messages_free(ms);
    /* a message without key has key NULL */
    fm_msg nokey = text_msg("plain");
    REQUIRE_OK(fm_publish(c, "nokey", &nokey, NULL));
    ms = NULL;
    REQUIRE_OK(fm_read(c, "nokey", 0, 0, 10, &ms));
    REQUIRE(fm_messages_len(ms) == 1);
    CHECK(fm_messages_get(ms, 0)->key == NULL && fm_messages_get(ms, 0)->key_len == 0);
    CHECK(fm_messages_get(ms, 0)->headers_len == 0);
    fm_messages_free(ms);
    /* the fully qualified name is the same stream */
    ms = NULL;
    CHECK_OK(fm_read(c, events, 0, 0, 100, &ms));
    CHECK(fm_messages_len(ms) == 5);
    fm_messages_free(ms);
    fm_client_close(c);
}

CORE_TEST(read_not_found)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_messages *ms = (fm_messages *)0x1;
    CHECK_ST(fm_read(c, "never", 0, 0, 10, &ms), FM_ERR_NOT_FOUND);
    CHECK(ms == NULL);
    fm_msg m = text_msg("x");
    REQUIRE_OK(fm_publish(c, "one", &m, NULL));
    CHECK_ST(fm_read(c, "one", 7, 0, 10, &ms), FM_ERR_NOT_FOUND); /* no partition 7 */
    CHECK(ms == NULL);
    fm_client_close(c);
}

CORE_TEST(publish_batch_positions_in_order)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_msg msgs[4] = {text_msg("a"), text_msg("b"), text_msg("c"), text_msg("d")};
    fm_position pos[4];
    memset(pos, 0xff, sizeof pos);
    REQUIRE_OK(fm_publish_batch(c, "batch", msgs, 4, pos));
    for (int i = 0; i < 4; i++)
        CHECK(pos[i].partition == 0 && pos[i].offset == (uint64_t)i);
    REQUIRE_OK(fm_publish_batch(c, "batch", msgs, 2, NULL));
    fm_messages *ms = NULL;
    REQUIRE_OK(fm_read(c, "batch", 0, 0, 100, &ms));
    CHECK(fm_messages_len(ms) == 6);
    const char *want = "abcdab";
    for (size_t i = 0; i < fm_messages_len(ms) && i < 6; i++) {
        const fm_message *m = fm_messages_get(ms, i);
        CHECK(m->payload_len == 1 && m->payload[0] == (uint8_t)want[i]);
    }
    fm_messages_free(ms);
    fm_client_close(c);
}

CORE_TEST(stream_create_partitions_and_latest_offset)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "partitions", "4"));
    REQUIRE_OK(fm_options_set(o, "max_messages", "0"));
    CHECK_OK(fm_stream_create(c, "parted", o));
    CHECK_OK(fm_stream_create(c, "parted", o)); /* same config: OK */
    uint32_t n = 0;
    CHECK_OK(fm_stream_partitions(c, "parted", &n));
    CHECK(n == 4);
    fm_options *o2 = fm_options_new();
    REQUIRE_OK(fm_options_set(o2, "partitions", "2"));
    CHECK_ST(fm_stream_create(c, "parted", o2), FM_ERR_ALREADY_EXISTS);
    fm_options_free(o2);
    /* options that do not apply to stream creation, and bad values */
    fm_options *o3 = fm_options_new();
    REQUIRE_OK(fm_options_set(o3, "group", "g"));
    CHECK_ST(fm_stream_create(c, "other", o3), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o3);
    fm_options *o4 = fm_options_new();
    REQUIRE_OK(fm_options_set(o4, "partitions", "0"));
    CHECK_ST(fm_stream_create(c, "other", o4), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o4);
    CHECK_ST(fm_stream_partitions(c, "other", &n), FM_ERR_NOT_FOUND);
    CHECK_OK(fm_stream_create(c, "plain", NULL));
    CHECK_OK(fm_stream_partitions(c, "plain", &n));
    CHECK(n == 1);

    /* latest offset: 0 when empty, then the next offset */
    uint64_t latest = 99;
    CHECK_OK(fm_get_latest_offset(c, "parted", 3, &latest));
    CHECK(latest == 0);
    CHECK_ST(fm_get_latest_offset(c, "parted", 4, &latest), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_get_latest_offset(c, "nostream", 0, &latest), FM_ERR_NOT_FOUND);

    /* a partition key always maps to the same partition */
    const char *key = "customer-42";
    uint32_t part = UINT32_MAX;
    for (int i = 0; i < 10; i++) {
        fm_msg m = text_msg("x");
        m.key = (const uint8_t *)key;
        m.key_len = strlen(key);
        fm_position pos;
        REQUIRE_OK(fm_publish(c, "parted", &m, &pos));
        CHECK(pos.partition < 4);
        if (i == 0)
            part = pos.partition;
        CHECK(pos.partition == part);
        CHECK(pos.offset == (uint64_t)i);
    }
    CHECK_OK(fm_get_latest_offset(c, "parted", part, &latest));
    CHECK(latest == 10);
    /* without key: spread over partitions */
    int used[4] = {0};
    for (int i = 0; i < 16; i++) {
        fm_msg m = text_msg("y");
        fm_position pos;
        REQUIRE_OK(fm_publish(c, "parted", &m, &pos));
        if (pos.partition < 4)
            used[pos.partition] = 1;
    }
    CHECK_MSG(used[0] + used[1] + used[2] + used[3] > 1,
              "16 key-less messages all went to one partition");
    fm_options_free(o);
    fm_client_close(c);
}

CORE_TEST(commit_and_get_offset)
{
    fm_client *c = test_client();
    REQUIRE(c);
    uint64_t off = 0;
    CHECK_ST(fm_commit_offset(c, "nostream", "g", 0, 1), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_get_offset(c, "nostream", "g", 0, &off), FM_ERR_NOT_FOUND);
    fm_msg ms[3] = {text_msg("a"), text_msg("b"), text_msg("c")};
    REQUIRE_OK(fm_publish_batch(c, "s", ms, 3, NULL));
    CHECK_ST(fm_get_offset(c, "s", "g", 0, &off), FM_ERR_NOT_FOUND);
    CHECK_OK(fm_commit_offset(c, "s", "g", 0, 1));
    CHECK_OK(fm_get_offset(c, "s", "g", 0, &off));
    CHECK(off == 1);
    CHECK_OK(fm_commit_offset(c, "s", "g", 0, 2));
    CHECK_OK(fm_get_offset(c, "s", "g", 0, &off));
    CHECK(off == 2);
    CHECK_ST(fm_get_offset(c, "s", "other", 0, &off), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_commit_offset(c, "s", "g", 5, 0), FM_ERR_NOT_FOUND); /* no partition 5 */
    fm_client_close(c);
}

/* ---- publish_async + flush -------------------------------------------- */

struct async_state {
    struct waiter w;
    pthread_t main_thread;
    int on_main_thread;
    int failures;
    int64_t last_offset;
    int out_of_order;
};

static void on_pub(void *ud, fm_status st, fm_position pos)
{
    struct async_state *s = ud;
    pthread_mutex_lock(&s->w.mu);
    if (pthread_equal(pthread_self(), s->main_thread))
        s->on_main_thread++;
    if (st != FM_OK)
        s->failures++;
    if ((int64_t)pos.offset <= s->last_offset)
        s->out_of_order++;
    s->last_offset = (int64_t)pos.offset;
    s->w.count++;
    pthread_cond_broadcast(&s->w.cv);
    pthread_mutex_unlock(&s->w.mu);
}

CORE_TEST(publish_async_and_flush)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct async_state s;
    memset(&s, 0, sizeof s);
    waiter_init(&s.w);
    s.main_thread = pthread_self();
    s.last_offset = -1;
    const int N = 1000;
    for (int i = 0; i < N; i++) {
        char body[32];
        snprintf(body, sizeof body, "async-%d", i);
        fm_msg m = text_msg(body); /* copied before fm_publish_async returns */
        REQUIRE_OK(fm_publish_async(c, "async", &m, on_pub, &s));
    }
    CHECK_OK(fm_flush(c, 30000 * slow()));
    /* flush returns only after every earlier publish called back */
    CHECK_MSG(waiter_get(&s.w) == N, "after flush %ld of %d callbacks ran", waiter_get(&s.w), N);
    CHECK(s.failures == 0);
    CHECK(s.on_main_thread == 0);
    CHECK(s.out_of_order == 0);
    /* NULL callback is allowed */
    fm_msg m = text_msg("no-callback");
    CHECK_OK(fm_publish_async(c, "async", &m, NULL, NULL));
    CHECK_OK(fm_flush(c, 10000 * slow()));
    uint64_t latest = 0;
    CHECK_OK(fm_get_latest_offset(c, "async", 0, &latest));
    CHECK(latest == (uint64_t)N + 1);
    /* payloads stored in issue order */
    fm_messages *ms = NULL;
    REQUIRE_OK(fm_read(c, "async", 0, 0, 3, &ms));
    CHECK(fm_messages_len(ms) == 3);
    if (fm_messages_len(ms) == 3)
        CHECK(bytes_eq(fm_messages_get(ms, 2)->payload, fm_messages_get(ms, 2)->payload_len, "async-2"));
    fm_messages_free(ms);
    /* flush with nothing pending */
    CHECK_OK(fm_flush(c, 0));
    fm_client_close(c);
    waiter_destroy(&s.w);
}

CORE_TEST(close_runs_pending_async_callbacks)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct async_state s;
    memset(&s, 0, sizeof s);
    waiter_init(&s.w);
    s.main_thread = pthread_self();
    s.last_offset = -1;
    for (int i = 0; i < 200; i++) {
        fm_msg m = text_msg("pending");
        REQUIRE_OK(fm_publish_async(c, "async", &m, on_pub, &s));
    }
    fm_client_close(c); /* finishes queued publishes: their callbacks run */
    CHECK_MSG(waiter_get(&s.w) == 200, "after close %ld of 200 callbacks ran", waiter_get(&s.w));
    waiter_destroy(&s.w);
}

/* ---- subscriptions ----------------------------------------------------- */

#define MAX_SEEN 4096
struct sub_state {
    struct waiter w;
    pthread_t main_thread;
    int on_main_thread;
    int concurrent;  /* > 0: two callbacks of one subscription overlapped */
    int inside;
    uint64_t offsets[MAX_SEEN];
    uint32_t partitions[MAX_SEEN];
    char first_payload[64];
};

static void sub_state_init(struct sub_state *s)
{
    memset(s, 0, sizeof *s);
    waiter_init(&s->w);
    s->main_thread = pthread_self();
}

static void on_msg(void *ud, const fm_message *m)
{
    struct sub_state *s = ud;
    pthread_mutex_lock(&s->w.mu);
    if (s->inside)
        s->concurrent++;
    s->inside = 1;
    if (pthread_equal(pthread_self(), s->main_thread))
        s->on_main_thread++;
    long i = s->w.count;
    if (i < MAX_SEEN) {
        s->offsets[i] = m->offset;
        s->partitions[i] = m->partition;
    }
    if (i == 0)
        snprintf(s->first_payload, sizeof s->first_payload, "%.*s",
                 (int)m->payload_len, (const char *)m->payload);
    pthread_mutex_unlock(&s->w.mu);
    /* outside the lock, so overlapping callbacks would be detected */
    sched_yield();
    pthread_mutex_lock(&s->w.mu);
    s->inside = 0;
    s->w.count++;
    pthread_cond_broadcast(&s->w.cv);
    pthread_mutex_unlock(&s->w.mu);
}

static void publish_n(fm_client *c, const char *stream, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char body[32];
        snprintf(body, sizeof body, "m%d", i);
        fm_msg m = text_msg(body);
        CHECK_OK(fm_publish(c, stream, &m, NULL));
    }
}

CORE_TEST(subscribe_callbacks_on_library_thread_in_order)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct sub_state *s = malloc(sizeof *s);
    REQUIRE(s);
    sub_state_init(s);
    fm_subscription *sub = NULL;
    /* default start (no group) = latest: m0..m4 published before are skipped */
    publish_n(c, "live", 0, 5);
    REQUIRE_OK(fm_subscribe(c, "live", NULL, on_msg, s, &sub));
    REQUIRE(sub != NULL);
    publish_n(c, "live", 5, 200);
    long got = waiter_wait(&s->w, 200, 10000 * slow());
    CHECK_MSG(got == 200, "%ld of 200 messages arrived", got);
    pthread_mutex_lock(&s->w.mu);
    CHECK(strcmp(s->first_payload, "m5") == 0);
    for (long i = 0; i < got && i < MAX_SEEN; i++)
        CHECK_MSG(s->offsets[i] == (uint64_t)(i + 5), "message %ld has offset %llu", i,
                  (unsigned long long)s->offsets[i]);
    CHECK(s->on_main_thread == 0);
    CHECK(s->concurrent == 0);
    pthread_mutex_unlock(&s->w.mu);
    CHECK_OK(fm_unsubscribe(sub));
    /* after unsubscribe returns, no further callback */
    long before = waiter_get(&s->w);
    publish_n(c, "live", 205, 10);
    sleep_ms(50);
    CHECK(waiter_get(&s->w) == before);
    fm_client_close(c);
    waiter_destroy(&s->w);
    free(s);
}

CORE_TEST(subscribe_start_options)
{
    fm_client *c = test_client();
    REQUIRE(c);
    publish_n(c, "hist", 0, 10);
    struct sub_state *s = malloc(sizeof *s);
    REQUIRE(s);

    /* start=earliest */
    sub_state_init(s);
    fm_options *o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "start", "earliest"));
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe(c, "hist", o, on_msg, s, &sub));
    fm_options_free(o);
    CHECK(waiter_wait(&s->w, 10, 10000 * slow()) == 10);
    CHECK(s->offsets[0] == 0 && s->offsets[9] == 9);
    CHECK_OK(fm_unsubscribe(sub));
    waiter_destroy(&s->w);

    /* start=<offset> */
    sub_state_init(s);
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "start", "7"));
    REQUIRE_OK(fm_options_set(o, "partition", "0"));
    REQUIRE_OK(fm_subscribe(c, "hist", o, on_msg, s, &sub));
    fm_options_free(o);
    CHECK(waiter_wait(&s->w, 3, 10000 * slow()) == 3);
    CHECK(s->offsets[0] == 7 && strcmp(s->first_payload, "m7") == 0);
    CHECK_OK(fm_unsubscribe(sub));
    waiter_destroy(&s->w);

    /* bad subscribe options */
    sub = NULL;
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "start", "committed")); /* needs a group */
    CHECK_ST(fm_subscribe(c, "hist", o, on_msg, s, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "auto_commit", "true")); /* needs a group */
    CHECK_ST(fm_subscribe(c, "hist", o, on_msg, s, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "tenant", "x")); /* a connect option */
    CHECK_ST(fm_subscribe(c, "hist", o, on_msg, s, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "partitions", "2")); /* a stream option */
    CHECK_ST(fm_subscribe(c, "hist", o, on_msg, s, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    CHECK(sub == NULL);
    fm_client_close(c);
    free(s);
}

CORE_TEST(subscribe_partition_filter_and_all_partitions)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "partitions", "3"));
    REQUIRE_OK(fm_stream_create(c, "p3", o));
    fm_options_free(o);
    struct sub_state *all = malloc(sizeof *all), *one = malloc(sizeof *one);
    REQUIRE(all && one);
    sub_state_init(all);
    sub_state_init(one);
    fm_subscription *sa = NULL, *s1 = NULL;
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "start", "earliest"));
    REQUIRE_OK(fm_subscribe(c, "p3", o, on_msg, all, &sa));
    REQUIRE_OK(fm_options_set(o, "partition", "1"));
    REQUIRE_OK(fm_subscribe(c, "p3", o, on_msg, one, &s1));
    fm_options_free(o);
    int on1 = 0;
    for (int i = 0; i < 30; i++) {
        fm_msg m = text_msg("x");
        fm_position pos;
        CHECK_OK(fm_publish(c, "p3", &m, &pos));
        on1 += pos.partition == 1;
    }
    CHECK(waiter_wait(&all->w, 30, 10000 * slow()) == 30);
    CHECK(waiter_wait(&one->w, on1, 10000 * slow()) == on1);
    sleep_ms(20);
    CHECK(waiter_get(&one->w) == on1);
    for (int i = 0; i < on1; i++)
        CHECK(one->partitions[i] == 1);
    CHECK_OK(fm_unsubscribe(sa));
    CHECK_OK(fm_unsubscribe(s1));
    fm_client_close(c);
    waiter_destroy(&all->w);
    waiter_destroy(&one->w);
    free(all);
    free(one);
}

CORE_TEST(consumer_group_resumes_after_committed)
{
    fm_client *c = test_client();
    REQUIRE(c);
    publish_n(c, "grp", 0, 5);
    struct sub_state *s = malloc(sizeof *s);
    REQUIRE(s);
    sub_state_init(s);
    fm_options *o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "group", "workers")); /* start=committed, auto_commit */
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe(c, "grp", o, on_msg, s, &sub));
    /* nothing committed yet: starts at earliest */
    CHECK(waiter_wait(&s->w, 5, 10000 * slow()) == 5);
    CHECK(s->offsets[0] == 0);
    CHECK_OK(fm_unsubscribe(sub)); /* commits what was processed */
    uint64_t off = 99;
    CHECK_OK(fm_get_offset(c, "grp", "workers", 0, &off));
    CHECK_MSG(off == 4, "committed offset %llu, expected 4", (unsigned long long)off);
    waiter_destroy(&s->w);

    publish_n(c, "grp", 5, 3);
    sub_state_init(s);
    REQUIRE_OK(fm_subscribe(c, "grp", o, on_msg, s, &sub));
    CHECK(waiter_wait(&s->w, 3, 10000 * slow()) == 3);
    sleep_ms(30);
    CHECK_MSG(waiter_get(&s->w) == 3, "resumed group got %ld messages, expected 3", waiter_get(&s->w));
    CHECK_MSG(s->offsets[0] == 5, "resumed at %llu, expected 5", (unsigned long long)s->offsets[0]);
    CHECK_OK(fm_unsubscribe(sub));
    waiter_destroy(&s->w);

    /* manual commit + auto_commit=false */
    CHECK_OK(fm_commit_offset(c, "grp", "manual", 0, 5));
    REQUIRE_OK(fm_options_set(o, "group", "manual"));
    REQUIRE_OK(fm_options_set(o, "auto_commit", "false"));
    sub_state_init(s);
    REQUIRE_OK(fm_subscribe(c, "grp", o, on_msg, s, &sub));
    CHECK(waiter_wait(&s->w, 2, 10000 * slow()) == 2);
    CHECK(s->offsets[0] == 6);
    CHECK_OK(fm_unsubscribe(sub));
    CHECK_OK(fm_get_offset(c, "grp", "manual", 0, &off));
    CHECK(off == 5); /* unchanged without auto_commit */
    fm_options_free(o);
    fm_client_close(c);
    waiter_destroy(&s->w);
    free(s);
}

/* A callback that unsubscribes its own subscription on the 3rd message. */
struct self_unsub {
    struct waiter w;
    fm_subscription *sub; /* set before the first message is published */
    fm_status unsub_status;
    int after_unsub;
    int unsubscribed;
};

static void on_msg_unsub(void *ud, const fm_message *m)
{
    (void)m;
    struct self_unsub *s = ud;
    pthread_mutex_lock(&s->w.mu);
    if (s->unsubscribed)
        s->after_unsub++;
    long n = ++s->w.count;
    fm_subscription *sub = s->sub;
    pthread_mutex_unlock(&s->w.mu);
    if (n == 3) {
        fm_status st = fm_unsubscribe(sub); /* must not deadlock */
        pthread_mutex_lock(&s->w.mu);
        s->unsub_status = st;
        s->unsubscribed = 1;
        pthread_cond_broadcast(&s->w.cv);
        pthread_mutex_unlock(&s->w.mu);
    }
}

CORE_TEST(unsubscribe_inside_callback)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct self_unsub s;
    memset(&s, 0, sizeof s);
    waiter_init(&s.w);
    s.unsub_status = -1;
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe(c, "selfunsub", NULL, on_msg_unsub, &s, &sub));
    pthread_mutex_lock(&s.w.mu);
    s.sub = sub;
    pthread_mutex_unlock(&s.w.mu);
    publish_n(c, "selfunsub", 0, 20);
    /* wait (bounded) for the unsubscribe to have happened */
    int64_t deadline = now_ms() + 10000 * slow();
    int done = 0;
    while (!done && now_ms() < deadline) {
        pthread_mutex_lock(&s.w.mu);
        done = s.unsubscribed;
        pthread_mutex_unlock(&s.w.mu);
        if (!done)
            sleep_ms(5);
    }
    CHECK_MSG(done, "callback's fm_unsubscribe did not return");
    CHECK_ST(s.unsub_status, FM_OK);
    publish_n(c, "selfunsub", 20, 5);
    sleep_ms(50);
    CHECK_MSG(s.after_unsub == 0, "%d callbacks after the self-unsubscribe", s.after_unsub);
    CHECK(waiter_get(&s.w) == 3);
    fm_client_close(c);
    waiter_destroy(&s.w);
}

/* Callbacks may call any fm_ function on the same client. */
struct reentrant {
    struct waiter w;
    fm_client *c;
    int errors;
};

static void on_msg_reenter(void *ud, const fm_message *m)
{
    struct reentrant *r = ud;
    fm_msg out = {.payload = m->payload, .payload_len = m->payload_len};
    int bad = 0;
    bad += fm_publish(r->c, "echo", &out, NULL) != FM_OK;
    bad += fm_kv_set(r->c, "seen", "last", m->payload, m->payload_len, 0, NULL) != FM_OK;
    bad += fm_queue_enqueue(r->c, "work", &out, 0, 0, NULL) != FM_OK;
    fm_messages *ms = NULL;
    bad += fm_read(r->c, "echo", 0, 0, 1, &ms) != FM_OK;
    fm_messages_free(ms);
    /* a nested subscription, created and ended inside a callback */
    fm_subscription *inner = NULL;
    bad += fm_subscribe(r->c, "inner", NULL, on_msg_reenter, r, &inner) != FM_OK;
    bad += fm_unsubscribe(inner) != FM_OK;
    pthread_mutex_lock(&r->w.mu);
    r->errors += bad;
    r->w.count++;
    pthread_cond_broadcast(&r->w.cv);
    pthread_mutex_unlock(&r->w.mu);
}

CORE_TEST(callback_may_call_library)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct reentrant r;
    memset(&r, 0, sizeof r);
    waiter_init(&r.w);
    r.c = c;
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe(c, "in", NULL, on_msg_reenter, &r, &sub));
    publish_n(c, "in", 0, 10);
    CHECK(waiter_wait(&r.w, 10, 10000 * slow()) == 10);
    CHECK_OK(fm_unsubscribe(sub));
    CHECK(r.errors == 0);
    uint64_t latest = 0;
    CHECK_OK(fm_get_latest_offset(c, "echo", 0, &latest));
    CHECK(latest == 10);
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "work", &st));
    CHECK(st.pending == 10);
    fm_client_close(c);
    waiter_destroy(&r.w);
}

/* Several subscriptions to one stream each get every message. */
CORE_TEST(fanout_to_many_subscriptions)
{
    fm_client *c = test_client();
    REQUIRE(c);
    enum { SUBS = 4, MSGS = 50 };
    struct sub_state *s[SUBS];
    fm_subscription *subs[SUBS];
    for (int i = 0; i < SUBS; i++) {
        s[i] = malloc(sizeof *s[i]);
        REQUIRE(s[i]);
        sub_state_init(s[i]);
        REQUIRE_OK(fm_subscribe(c, "fan", NULL, on_msg, s[i], &subs[i]));
    }
    publish_n(c, "fan", 0, MSGS);
    for (int i = 0; i < SUBS; i++) {
        CHECK(waiter_wait(&s[i]->w, MSGS, 10000 * slow()) == MSGS);
        CHECK(s[i]->offsets[MSGS - 1] == MSGS - 1);
        CHECK_OK(fm_unsubscribe(subs[i]));
        waiter_destroy(&s[i]->w);
        free(s[i]);
    }
    fm_client_close(c);
}

/* One client used from several threads at once. */
struct par_arg {
    fm_client *c;
    int id;
    int errors;
};

static void *par_worker(void *p)
{
    struct par_arg *a = p;
    char key[32];
    for (int i = 0; i < 100; i++) {
        fm_msg m = text_msg("par");
        a->errors += fm_publish(a->c, "par", &m, NULL) != FM_OK;
        snprintf(key, sizeof key, "k%d-%d", a->id, i);
        a->errors += fm_kv_set(a->c, "par", key, (const uint8_t *)"v", 1, 0, NULL) != FM_OK;
        a->errors += fm_queue_enqueue(a->c, "par", &m, 0, 0, NULL) != FM_OK;
    }
    return NULL;
}

CORE_TEST(client_is_thread_safe)
{
    fm_client *c = test_client();
    REQUIRE(c);
    enum { T = 4 };
    pthread_t th[T];
    struct par_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (struct par_arg){c, i, 0};
        pthread_create(&th[i], NULL, par_worker, &args[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].errors == 0);
    }
    uint64_t latest = 0;
    CHECK_OK(fm_get_latest_offset(c, "par", 0, &latest));
    CHECK(latest == T * 100);
    fm_strings *keys = NULL;
    CHECK_OK(fm_kv_list_keys(c, "par", NULL, &keys));
    CHECK(fm_strings_len(keys) == T * 100);
    fm_strings_free(keys);
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "par", &st));
    CHECK(st.pending == T * 100);
    fm_client_close(c);
}
