/* test_tiers.c - per-publish delivery tiers (fm_publish_with) and subject
 * patterns in subscriptions, on every engine the core tests run on. */
#include "harness.h"

static fm_options *publish_opts(const char *tier, const char *ack)
{
    fm_options *o = fm_options_new();
    if (tier)
        fm_options_set(o, "tier", tier);
    if (ack)
        fm_options_set(o, "require_ack", ack);
    return o;
}

static const char *header(const fm_message *m, const char *key)
{
    for (size_t i = 0; i < m->headers_len; i++)
        if (strcmp(m->headers[i].key, key) == 0)
            return m->headers[i].value;
    return NULL;
}

/* The next message of a pull subscription, within a bounded wait. */
static fm_messages *next_one(fm_subscription *sub)
{
    int64_t deadline = now_ms() + 10000 * slow();
    while (now_ms() < deadline) {
        fm_messages *ms = NULL;
        if (fm_subscription_next(sub, 1, 200, &ms) != FM_OK)
            return NULL;
        if (fm_messages_len(ms) == 1)
            return ms;
        fm_messages_free(ms);
    }
    return NULL;
}

CORE_TEST(publish_with_memory_tier_reaches_live_subscribers_only)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe_pull(c, "tev.>", NULL, &sub));
    fm_options *mem = publish_opts("memory", NULL);
    fm_msg m = text_msg("live");
    fm_header h = {.key = "trace-id", .value = "abc"};
    m.headers = &h;
    m.headers_len = 1;
    fm_position pos = {.partition = 7, .offset = 7};
    CHECK_OK(fm_publish_with(c, "tev.user.login", &m, mem, &pos));
    CHECK(pos.partition == 0 && pos.offset == FM_OFFSET_NONE);
    fm_messages *ms = next_one(sub);
    CHECK(ms != NULL);
    if (ms) {
        const fm_message *got = fm_messages_get(ms, 0);
        CHECK(got->offset == FM_OFFSET_NONE);
        CHECK(bytes_eq(got->payload, got->payload_len, "live"));
        CHECK(header(got, "fm-subject") && strcmp(header(got, "fm-subject"), "tev.user.login") == 0);
        CHECK(header(got, "trace-id") && strcmp(header(got, "trace-id"), "abc") == 0);
        fm_messages_free(ms);
    }
    /* require_ack: confirmed by the engine, still not stored. */
    fm_options *acked = publish_opts("memory", "true");
    fm_msg m2 = text_msg("acked");
    CHECK_OK(fm_publish_with(c, "tev.click", &m2, acked, NULL));
    ms = next_one(sub);
    CHECK(ms && fm_messages_get(ms, 0)->offset == FM_OFFSET_NONE);
    fm_messages_free(ms);
    /* The default tier is persistent: an offset, read back with its subject. */
    fm_msg m3 = text_msg("kept");
    REQUIRE_OK(fm_publish_with(c, "tev.order", &m3, NULL, &pos));
    CHECK(pos.offset == 0);
    ms = next_one(sub);
    CHECK(ms && fm_messages_get(ms, 0)->offset == 0);
    fm_messages_free(ms);
    fm_messages *read = NULL;
    REQUIRE_OK(fm_read(c, "tev", 0, 0, 10, &read));
    CHECK(fm_messages_len(read) == 1);
    if (fm_messages_len(read) == 1) {
        const char *s = header(fm_messages_get(read, 0), "fm-subject");
        CHECK(s && strcmp(s, "tev.order") == 0);
    }
    fm_messages_free(read);
    CHECK_OK(fm_unsubscribe(sub));
    fm_options_free(mem);
    fm_options_free(acked);
    fm_client_close(c);
}

CORE_TEST(publish_with_replicated_is_refused_on_one_copy)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *rep = publish_opts("replicated", NULL);
    fm_msg m = text_msg("pay");
    CHECK_ST(fm_publish_with(c, "trep.done", &m, rep, NULL), FM_ERR_UNAVAILABLE);
    CHECK(strstr(fm_last_error(), "replicated tier") != NULL);
    uint32_t parts = 0;
    CHECK_ST(fm_stream_partitions(c, "trep", &parts), FM_ERR_NOT_FOUND); /* nothing stored */
    fm_options_free(rep);
    fm_client_close(c);
}

CORE_TEST(publish_with_and_patterns_check_their_input)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = fm_options_new();
    CHECK_ST(fm_options_set(o, "tier", "fast"), FM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(fm_last_error(), "fast") != NULL);
    CHECK_ST(fm_options_set(o, "tiers", "memory"), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_options_set(o, "partitions", "2"));
    fm_msg m = text_msg("x");
    CHECK_ST(fm_publish_with(c, "tin", &m, o, NULL), FM_ERR_INVALID_ARGUMENT); /* a stream key */
    fm_options_free(o);
    fm_options *durable = publish_opts("durable", NULL); /* a stream's tier, not a publish's */
    CHECK_ST(fm_publish_with(c, "tin", &m, durable, NULL), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(durable);
    CHECK_ST(fm_publish_with(c, NULL, &m, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_publish_with(c, "tin", NULL, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_publish_with(NULL, "tin", &m, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_publish_with(c, "tin.*", &m, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_publish_with(c, "tin..x", &m, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    fm_subscription *sub = NULL;
    CHECK_ST(fm_subscribe_pull(c, "*.x", NULL, &sub), FM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(fm_last_error(), "first token") != NULL);
    CHECK(sub == NULL);
    CHECK_ST(fm_subscribe_pull(c, "tin.>.x", NULL, &sub), FM_ERR_INVALID_ARGUMENT);
    fm_client_close(c);
}

struct seen {
    struct waiter w;
    int live;
};

static void on_msg(void *ud, const fm_message *m)
{
    struct seen *s = ud;
    if (m->offset == FM_OFFSET_NONE)
        __atomic_add_fetch(&s->live, 1, __ATOMIC_SEQ_CST);
    waiter_add(&s->w, 1);
}

CORE_TEST(auto_commit_skips_memory_tier_messages)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct seen s = {.live = 0};
    waiter_init(&s.w);
    fm_options *so = fm_options_new();
    fm_options_set(so, "group", "g");
    fm_options_set(so, "start", "earliest");
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_subscribe(c, "tgc.*", so, on_msg, &s, &sub));
    fm_options *mem = publish_opts("memory", NULL);
    fm_msg m = text_msg("m");
    CHECK_OK(fm_publish_with(c, "tgc.live", &m, mem, NULL));
    CHECK_OK(fm_publish_with(c, "tgc.kept", &m, NULL, NULL));
    CHECK_OK(fm_publish_with(c, "tgc.live", &m, mem, NULL));
    CHECK(waiter_wait(&s.w, 3, 10000 * slow()) == 3);
    CHECK(__atomic_load_n(&s.live, __ATOMIC_SEQ_CST) == 2);
    CHECK_OK(fm_unsubscribe(sub));
    uint64_t committed = 99;
    CHECK_OK(fm_get_offset(c, "tgc", "g", 0, &committed));
    CHECK(committed == 0);
    fm_options_free(so);
    fm_options_free(mem);
    waiter_destroy(&s.w);
    fm_client_close(c);
}
