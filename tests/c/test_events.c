/* test_events.c - events to named recipients: publish/subscribe
 * with callbacks, accessors, auto and manual ack, defer, discard, replay,
 * pause/resume, reply, end-to-end encryption, tamper rejection, bad input
 * and lifecycle (close with a live subscription, unsubscribe in a callback). */
#include "harness.h"

#define MAX_SEEN 64

/* What a subscription callback saw, guarded by the waiter's mutex. */
struct seen {
    struct waiter w;
    uint64_t ids[MAX_SEEN];
    uint32_t counts[MAX_SEEN];
    int64_t at_ms[MAX_SEEN];
    char payloads[MAX_SEEN][64];
    int encrypted[MAX_SEEN];
    /* Optional behaviour inside the callback. */
    fm_client *reply_with;              /* reply "ack:<payload>" to the sender */
    fm_event_subscription **unsub_self; /* unsubscribe from inside the callback */
    int bad_fields;
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    waiter_init(&s->w);
}

static void on_event(void *ud, const fm_event *ev)
{
    struct seen *s = ud;
    size_t len = 0;
    const uint8_t *p = fm_event_payload(ev, &len);
    int bad = fm_event_id(ev) == UINT64_MAX || !fm_event_name(ev) || !fm_event_sender(ev) ||
              fm_event_timestamp_ms(ev) < 1600000000000LL || fm_event_delivery_count(ev) < 1;
    if (s->reply_with) {
        char body[80];
        int n = snprintf(body, sizeof body, "ack:%.*s", (int)(len < 60 ? len : 60), (const char *)p);
        if (fm_event_reply(s->reply_with, ev, (const uint8_t *)body, (size_t)n, NULL, NULL) != FM_OK)
            bad = 1;
    }
    pthread_mutex_lock(&s->w.mu);
    long i = s->w.count;
    if (i < MAX_SEEN) {
        s->ids[i] = fm_event_id(ev);
        s->counts[i] = fm_event_delivery_count(ev);
        s->at_ms[i] = now_ms();
        snprintf(s->payloads[i], sizeof s->payloads[i], "%.*s", (int)(len < 63 ? len : 63), (const char *)p);
        s->encrypted[i] = fm_event_encrypted(ev);
    }
    s->bad_fields += bad;
    pthread_mutex_unlock(&s->w.mu);
    if (s->unsub_self && *s->unsub_self) {
        fm_event_unsubscribe(*s->unsub_self); /* from inside the callback */
        *s->unsub_self = NULL;
    }
    waiter_add(&s->w, 1);
}

/* A client of app `app` (secret may be NULL) on the engine shared by this
 * test: mem://<mem> in embedded mode, the test's namespace on a broker. */
static fm_client *app_client(const char *mem, const char *app, const char *secret)
{
    fm_options *o = fm_options_new();
    if (!o)
        return NULL;
    fm_client *c = NULL;
    if (fm_options_set(o, "app_id", app) != FM_OK ||
        (secret && fm_options_set(o, "app_secret_key", secret) != FM_OK)) {
        harness_fail(__FILE__, __LINE__, "options: %s", fm_last_error());
    } else if (broker_mode()) {
        c = test_client_opts(o);
    } else {
        char url[128];
        snprintf(url, sizeof url, "mem://%s-%s", mem, test_ns());
        fm_status st = fm_client_connect(url, o, &c);
        if (st != FM_OK)
            harness_fail(__FILE__, __LINE__, "connect %s: %s", url, fm_last_error());
    }
    fm_options_free(o);
    return c;
}

static fm_options *sub_opts(const char *auto_ack, const char *ack_wait_ms)
{
    fm_options *o = fm_options_new();
    if (o && auto_ack && fm_options_set(o, "auto_ack", auto_ack) != FM_OK)
        harness_fail(__FILE__, __LINE__, "auto_ack: %s", fm_last_error());
    if (o && ack_wait_ms && fm_options_set(o, "ack_wait_ms", ack_wait_ms) != FM_OK)
        harness_fail(__FILE__, __LINE__, "ack_wait_ms: %s", fm_last_error());
    return o;
}

static uint64_t publish_text(fm_client *c, const char *name, const char *to, const char *body,
                             const char *meta)
{
    const char *rcpt[1] = {to};
    uint64_t id = UINT64_MAX;
    CHECK_OK(fm_event_publish(c, name, rcpt, 1, (const uint8_t *)body, strlen(body), meta, &id));
    return id;
}

CORE_TEST(events_publish_subscribe_auto_ack_and_reply)
{
    fm_client *alice = app_client("ev1", "alice", NULL);
    fm_client *bob = app_client("ev1", "bob", NULL);
    REQUIRE(alice && bob);
    struct seen at_bob, at_alice;
    seen_init(&at_bob);
    seen_init(&at_alice);
    at_bob.reply_with = bob;
    fm_event_subscription *sb = NULL, *sa = NULL;
    fm_options *o = sub_opts(NULL, "300"); /* auto_ack defaults to true */
    CHECK_OK(fm_event_subscribe(bob, "orders/status/updated", o, on_event, &at_bob, &sb));
    CHECK_OK(fm_event_subscribe(alice, "orders/status/updated", o, on_event, &at_alice, &sa));
    fm_options_free(o);
    REQUIRE(sb && sa);
    const char *meta = "{\"source\":\"c\"}";
    uint64_t ids[3];
    ids[0] = publish_text(alice, "orders/status/updated", "bob", "order-1", meta);
    ids[1] = publish_text(alice, "orders/status/updated", "bob", "order-2", NULL);
    ids[2] = publish_text(alice, "orders/status/updated", "bob", "order-3", NULL);
    CHECK(ids[0] != ids[1] && ids[1] != ids[2]);
    CHECK(waiter_wait(&at_bob.w, 3, 10000 * slow()) == 3);
    CHECK(waiter_wait(&at_alice.w, 3, 10000 * slow()) == 3);
    sleep_ms(900); /* three times ack_wait: auto-acked events do not come back */
    CHECK(waiter_get(&at_bob.w) == 3);
    pthread_mutex_lock(&at_bob.w.mu);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "order-%d", i + 1);
        CHECK(at_bob.ids[i] == ids[i]);
        CHECK(at_bob.counts[i] == 1);
        CHECK(strcmp(at_bob.payloads[i], want) == 0);
    }
    CHECK(at_bob.bad_fields == 0);
    pthread_mutex_unlock(&at_bob.w.mu);
    pthread_mutex_lock(&at_alice.w.mu);
    CHECK(strcmp(at_alice.payloads[0], "ack:order-1") == 0);
    pthread_mutex_unlock(&at_alice.w.mu);
    CHECK_OK(fm_event_subscription_status(sb, NULL));
    CHECK_OK(fm_event_unsubscribe(sb));
    CHECK_OK(fm_event_unsubscribe(sa));
    fm_client_close(alice);
    fm_client_close(bob);
    waiter_destroy(&at_bob.w);
    waiter_destroy(&at_alice.w);
}

CORE_TEST(events_manual_ack_defer_discard_replay)
{
    fm_client *alice = app_client("ev2", "alice", NULL);
    fm_client *bob = app_client("ev2", "bob", NULL);
    REQUIRE(alice && bob);
    struct seen s;
    seen_init(&s);
    fm_event_subscription *sub = NULL;
    fm_options *o = sub_opts("false", "60000");
    CHECK_OK(fm_event_subscribe(bob, "jobs", o, on_event, &s, &sub));
    fm_options_free(o);
    REQUIRE(sub);
    uint64_t e1 = publish_text(alice, "jobs", "bob", "one", NULL);
    uint64_t e2 = publish_text(alice, "jobs", "bob", "two", NULL);
    uint64_t e3 = publish_text(alice, "jobs", "bob", "three", NULL);
    REQUIRE(waiter_wait(&s.w, 3, 10000 * slow()) == 3);

    CHECK_OK(fm_event_ack(sub, e1));
    CHECK_ST(fm_event_ack(sub, e1), FM_ERR_NOT_FOUND);
    int64_t t0 = now_ms();
    CHECK_OK(fm_event_defer(sub, e2, 300, "temporary unavailability"));
    CHECK_OK(fm_event_discard(sub, e3, "invalid data"));
    CHECK_ST(fm_event_ack(sub, e3), FM_ERR_NOT_FOUND);
    REQUIRE(waiter_wait(&s.w, 4, 10000 * slow()) == 4);
    pthread_mutex_lock(&s.w.mu);
    CHECK(s.ids[3] == e2 && s.counts[3] == 2);
    CHECK(s.at_ms[3] - t0 >= 290);
    pthread_mutex_unlock(&s.w.mu);
    CHECK_OK(fm_event_ack(sub, e2));

    fm_event *ev = NULL;
    CHECK_OK(fm_event_replay(sub, e1, &ev));
    REQUIRE(ev);
    size_t len = 0;
    const uint8_t *payload = fm_event_payload(ev, &len);
    CHECK(bytes_eq(payload, len, "one"));
    CHECK(fm_event_id(ev) == e1 && strcmp(fm_event_sender(ev), "alice") == 0);
    CHECK(strcmp(fm_event_name(ev), "jobs") == 0 && fm_event_metadata(ev) == NULL);
    fm_event_free(ev);
    REQUIRE(waiter_wait(&s.w, 5, 10000 * slow()) == 5);
    pthread_mutex_lock(&s.w.mu);
    CHECK(s.ids[4] == e1 && strcmp(s.payloads[4], "one") == 0);
    pthread_mutex_unlock(&s.w.mu);
    CHECK_OK(fm_event_ack(sub, e1));
    sleep_ms(300);
    CHECK(waiter_get(&s.w) == 5); /* the discarded one never came back, the replay came once */
    CHECK_ST(fm_event_replay(sub, 987654, NULL), FM_ERR_NOT_FOUND);
    CHECK_OK(fm_event_replay(sub, e3, NULL)); /* a discarded event can be replayed */
    CHECK(waiter_wait(&s.w, 6, 10000 * slow()) == 6);
    CHECK_OK(fm_event_unsubscribe(sub));
    fm_client_close(alice);
    fm_client_close(bob);
    waiter_destroy(&s.w);
}

CORE_TEST(events_pause_holds_and_resume_releases)
{
    fm_client *alice = app_client("ev3", "alice", NULL);
    fm_client *bob = app_client("ev3", "bob", NULL);
    REQUIRE(alice && bob);
    struct seen s;
    seen_init(&s);
    fm_event_subscription *sub = NULL;
    CHECK_OK(fm_event_subscribe(bob, "jobs", NULL, on_event, &s, &sub));
    REQUIRE(sub);
    CHECK_OK(fm_event_pause(sub, "Maintenance in progress"));
    CHECK_OK(fm_event_pause(sub, NULL)); /* idempotent */
    for (int i = 0; i < 4; i++)
        publish_text(alice, "jobs", "bob", "held", NULL);
    sleep_ms(700);
    CHECK(waiter_get(&s.w) == 0);
    CHECK_OK(fm_event_resume(sub));
    CHECK(waiter_wait(&s.w, 4, 10000 * slow()) == 4);
    sleep_ms(200);
    CHECK(waiter_get(&s.w) == 4);
    CHECK_OK(fm_event_unsubscribe(sub));
    fm_client_close(alice);
    fm_client_close(bob);
    waiter_destroy(&s.w);
}

static int contains(const uint8_t *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return 1;
    return 0;
}

CORE_TEST(events_encrypted_end_to_end_and_tamper_rejected)
{
    fm_buf *sec_a = NULL, *pub_a = NULL, *sec_b = NULL, *pub_b = NULL;
    REQUIRE_OK(fm_event_keygen(&sec_a, &pub_a));
    REQUIRE_OK(fm_event_keygen(&sec_b, &pub_b));
    char ka[64] = {0}, kb[64] = {0};
    size_t la = 0, lb = 0;
    const uint8_t *pa = fm_buf_data(sec_a, &la), *pb = fm_buf_data(sec_b, &lb);
    CHECK(la == 44 && lb == 44);
    memcpy(ka, pa, la);
    memcpy(kb, pb, lb);
    fm_buf_free(sec_a);
    fm_buf_free(pub_a);
    fm_buf_free(sec_b);
    fm_buf_free(pub_b);
    fm_client *alice = app_client("ev4", "alice", ka);
    fm_client *bob = app_client("ev4", "bob", kb);
    REQUIRE(alice && bob);
    struct seen s;
    seen_init(&s);
    fm_event_subscription *sub = NULL;
    CHECK_OK(fm_event_subscribe(bob, "secrets", NULL, on_event, &s, &sub)); /* registers bob's key */
    REQUIRE(sub);
    const char *secret = "TOP-SECRET-C-PAYLOAD";
    uint64_t id = publish_text(alice, "secrets", "bob", secret, "{\"routing\":1}");
    REQUIRE(waiter_wait(&s.w, 1, 10000 * slow()) == 1);
    pthread_mutex_lock(&s.w.mu);
    CHECK(s.ids[0] == id && strcmp(s.payloads[0], secret) == 0 && s.encrypted[0]);
    pthread_mutex_unlock(&s.w.mu);

    /* The stored event holds ciphertext only. */
    fm_messages *log = NULL;
    REQUIRE_OK(fm_read(alice, "_events", 0, 0, 100, &log));
    CHECK(fm_messages_len(log) >= 1);
    for (size_t i = 0; i < fm_messages_len(log); i++) {
        const fm_message *m = fm_messages_get(log, i);
        CHECK(!contains(m->payload, m->payload_len, secret));
    }
    fm_messages_free(log);

    /* Unsubscribe (a paused subscription may hold the next event), tamper
       with the next delivery in bob's inbox, subscribe again. */
    CHECK_OK(fm_event_unsubscribe(sub));
    sub = NULL;
    uint64_t id2 = publish_text(alice, "secrets", "bob", "pay 10 EUR", NULL);
    (void)id2;
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(alice, "_inbox.bob.secrets", 60000, 5000 * slow(), &job));
    REQUIRE(job);
    size_t plen = 0;
    const uint8_t *p = fm_job_payload(job, &plen);
    REQUIRE(plen > 10);
    uint8_t *copy = malloc(plen);
    REQUIRE(copy);
    memcpy(copy, p, plen);
    copy[plen / 2] ^= 1;
    fm_msg m = {copy, plen, NULL, 0, fm_job_headers(job), fm_job_headers_len(job)};
    CHECK_OK(fm_queue_enqueue(alice, "_inbox.bob.secrets", &m, 0, 0, NULL));
    CHECK_OK(fm_queue_ack(alice, "_inbox.bob.secrets", fm_job_id(job)));
    free(copy);
    fm_job_free(job);
    CHECK_OK(fm_event_subscribe(bob, "secrets", NULL, on_event, &s, &sub));
    REQUIRE(sub);
    uint64_t rejected = 0;
    int64_t deadline = now_ms() + 10000 * slow();
    while (rejected == 0 && now_ms() < deadline) {
        fm_event_subscription_status(sub, &rejected);
        sleep_ms(20);
    }
    CHECK(rejected == 1);
    CHECK_ST(fm_event_subscription_status(sub, NULL), FM_ERR_UNAUTHORIZED);
    CHECK(strstr(fm_last_error(), "authentication") != NULL);
    CHECK(waiter_get(&s.w) == 1); /* never delivered as data */
    publish_text(alice, "secrets", "bob", "pay 20 EUR", NULL);
    REQUIRE(waiter_wait(&s.w, 2, 10000 * slow()) == 2);
    pthread_mutex_lock(&s.w.mu);
    CHECK(strcmp(s.payloads[1], "pay 20 EUR") == 0);
    pthread_mutex_unlock(&s.w.mu);
    CHECK_OK(fm_event_unsubscribe(sub));
    fm_client_close(alice);
    fm_client_close(bob);
    waiter_destroy(&s.w);
}

CORE_TEST(events_bad_input_is_a_clear_error)
{
    fm_client *alice = app_client("ev5", "alice", NULL);
    fm_client *anon = test_client(); /* no app_id */
    REQUIRE(alice && anon);
    const char *rcpt[2] = {"bob", NULL};
    const uint8_t *x = (const uint8_t *)"x";
    CHECK_ST(fm_event_publish(NULL, "e", rcpt, 1, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, NULL, rcpt, 1, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, "e", rcpt, 0, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, "e", NULL, 1, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, "e", rcpt, 2, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, "e", rcpt, 1, NULL, 5, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, "e", rcpt, 1, x, 1, "[1,2]", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(alice, "", rcpt, 1, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    const char *bad_rcpt[1] = {"not/an/app"};
    CHECK_ST(fm_event_publish(alice, "e", bad_rcpt, 1, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_publish(anon, "e", rcpt, 1, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(fm_last_error(), "app_id") != NULL);
    CHECK_OK(fm_event_publish(alice, "e", rcpt, 1, NULL, 0, NULL, NULL)); /* empty payload is fine */

    struct seen s;
    seen_init(&s);
    fm_event_subscription *sub = (fm_event_subscription *)1;
    CHECK_ST(fm_event_subscribe(alice, "e", NULL, NULL, &s, &sub), FM_ERR_INVALID_ARGUMENT);
    CHECK(sub == NULL);
    fm_options *o = fm_options_new();
    CHECK_OK(fm_options_set(o, "group", "g"));
    CHECK_ST(fm_event_subscribe(alice, "e", o, on_event, &s, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = sub_opts(NULL, "0");
    CHECK_ST(fm_event_subscribe(alice, "e", o, on_event, &s, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = fm_options_new();
    CHECK_ST(fm_options_set(o, "auto_ack", "perhaps"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, "app_secret_key", "short"), FM_OK); /* checked on connect */
    fm_client *bad = NULL;
    CHECK_ST(fm_client_connect("mem://", o, &bad), FM_ERR_INVALID_ARGUMENT);
    CHECK(bad == NULL);
    fm_options_free(o);
    CHECK_ST(fm_event_subscribe(anon, "e", NULL, on_event, &s, &sub), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_ack(NULL, 1), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_defer(NULL, 1, 0, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_discard(NULL, 1, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_replay(NULL, 1, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_pause(NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_resume(NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_subscription_status(NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_event_reply(alice, NULL, x, 1, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_event_unsubscribe(NULL));
    fm_event_free(NULL);
    CHECK_ST(fm_event_keygen(NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    size_t len = 7;
    CHECK(fm_event_payload(NULL, &len) == NULL && len == 0);
    CHECK(fm_event_id(NULL) == 0 && fm_event_name(NULL) == NULL && fm_event_sender(NULL) == NULL);
    CHECK(fm_event_metadata(NULL) == NULL && fm_event_delivery_count(NULL) == 0);
    CHECK(fm_event_timestamp_ms(NULL) == 0 && !fm_event_encrypted(NULL));
    bool has = true;
    CHECK(fm_event_reply_to(NULL, &has) == 0 && !has);
    fm_client_close(alice);
    fm_client_close(anon);
    waiter_destroy(&s.w);
}

CORE_TEST(events_unsubscribe_in_callback_and_close_with_live_subscription)
{
    fm_client *alice = app_client("ev6", "alice", NULL);
    fm_client *bob = app_client("ev6", "bob", NULL);
    REQUIRE(alice && bob);
    struct seen s;
    seen_init(&s);
    fm_event_subscription *sub = NULL;
    s.unsub_self = &sub;
    CHECK_OK(fm_event_subscribe(bob, "jobs", NULL, on_event, &s, &sub));
    REQUIRE(sub);
    publish_text(alice, "jobs", "bob", "a", NULL);
    publish_text(alice, "jobs", "bob", "b", NULL);
    CHECK(waiter_wait(&s.w, 1, 10000 * slow()) == 1);
    sleep_ms(300);
    CHECK(waiter_get(&s.w) == 1); /* unsubscribed inside the first callback */

    /* Close the client while a subscription is live: no callback after
     * close returns; the handle is then only freed. */
    struct seen s2;
    seen_init(&s2);
    fm_event_subscription *live = NULL;
    CHECK_OK(fm_event_subscribe(bob, "jobs", NULL, on_event, &s2, &live));
    REQUIRE(live);
    CHECK(waiter_wait(&s2.w, 1, 10000 * slow()) == 1);
    pthread_mutex_lock(&s2.w.mu);
    /* "a" was auto-acked although its callback unsubscribed: "b" comes next */
    CHECK(strcmp(s2.payloads[0], "b") == 0);
    pthread_mutex_unlock(&s2.w.mu);
    fm_client_close(bob);
    long after_close = waiter_get(&s2.w);
    publish_text(alice, "jobs", "bob", "c", NULL);
    sleep_ms(300);
    CHECK(waiter_get(&s2.w) == after_close);
    CHECK_ST(fm_event_ack(live, 1), FM_ERR_CLOSED);
    CHECK_OK(fm_event_unsubscribe(live));
    fm_client_close(alice);
    waiter_destroy(&s.w);
    waiter_destroy(&s2.w);
}

/* async_handler: the handler of an event ends at fm_event_done, not when the
 * callback returns; one event is handled at a time; with auto_ack FM_OK acks
 * it and a failure status leaves it to come back after ack_wait. */
CORE_TEST(events_async_handler_ends_at_fm_event_done)
{
    fm_client *alice = app_client("ev7", "alice", NULL);
    fm_client *bob = app_client("ev7", "bob", NULL);
    REQUIRE(alice && bob);
    struct seen at_bob;
    seen_init(&at_bob);
    fm_event_subscription *sb = NULL;
    fm_options *o = sub_opts(NULL, "300");
    CHECK_OK(fm_options_set(o, "async_handler", "true"));
    CHECK_ST(fm_options_set(o, "async_handler", "maybe"), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_event_subscribe(bob, "jobs/async", o, on_event, &at_bob, &sb));
    fm_options_free(o);
    REQUIRE(sb);
    uint64_t first = publish_text(alice, "jobs/async", "bob", "one", NULL);
    uint64_t second = publish_text(alice, "jobs/async", "bob", "two", NULL);
    CHECK(waiter_wait(&at_bob.w, 1, 10000 * slow()) == 1);
    sleep_ms(200); /* the second waits for the first's handler to end */
    CHECK(waiter_get(&at_bob.w) == 1);
    CHECK_ST(fm_event_done(sb, second, FM_OK), FM_ERR_NOT_FOUND); /* not the one being handled */
    CHECK_OK(fm_event_done(sb, first, FM_ERR_INTERNAL));           /* failed: not acked */
    CHECK_ST(fm_event_done(sb, first, FM_OK), FM_ERR_NOT_FOUND);   /* its handling is over */
    /* The first comes back after ack_wait (300 ms), the second may come first. */
    CHECK(waiter_wait(&at_bob.w, 2, 10000 * slow()) == 2);
    for (int round = 0; round < 2; round++) {
        pthread_mutex_lock(&at_bob.w.mu);
        long n = at_bob.w.count;
        uint64_t id = at_bob.ids[n - 1];
        pthread_mutex_unlock(&at_bob.w.mu);
        CHECK_OK(fm_event_done(sb, id, FM_OK)); /* acked */
        if (round == 0)
            CHECK(waiter_wait(&at_bob.w, 3, 10000 * slow()) == 3);
    }
    sleep_ms(900); /* acked events do not come back */
    CHECK(waiter_get(&at_bob.w) == 3);
    pthread_mutex_lock(&at_bob.w.mu);
    CHECK(at_bob.ids[0] == first);
    CHECK((at_bob.ids[1] == first && at_bob.counts[1] == 2) || (at_bob.ids[2] == first && at_bob.counts[2] == 2));
    CHECK(at_bob.ids[1] == second || at_bob.ids[2] == second);
    pthread_mutex_unlock(&at_bob.w.mu);
    CHECK_ST(fm_event_done(NULL, first, FM_OK), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_event_unsubscribe(sb));
    CHECK_ST(fm_event_done(sb, first, FM_OK), FM_ERR_CLOSED);
    /* Without async_handler the callback's return ends the handler. */
    fm_event_subscription *sync_sub = NULL;
    CHECK_OK(fm_event_subscribe(bob, "jobs/sync", NULL, on_event, &at_bob, &sync_sub));
    CHECK_ST(fm_event_done(sync_sub, 1, FM_OK), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_event_unsubscribe(sync_sub));
    fm_client_close(alice);
    fm_client_close(bob);
    waiter_destroy(&at_bob.w);
}
