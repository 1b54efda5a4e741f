/* test_tiers_async.c - fm_publish_with_async (tiers through a callback) and
 * the msg_id option of fm_publish_with / fm_publish_with_async. */
#include "harness.h"

struct tier_cb {
    struct waiter w;
    pthread_mutex_t mu;
    fm_status status[8];
    uint64_t offset[8];
    char error[8][200];
    int n;
};

static void on_tier(void *ud, fm_status st, fm_position pos)
{
    struct tier_cb *s = ud;
    pthread_mutex_lock(&s->mu);
    if (s->n < 8) {
        s->status[s->n] = st;
        s->offset[s->n] = pos.offset;
        snprintf(s->error[s->n], sizeof s->error[s->n], "%s", st == FM_OK ? "" : fm_last_error());
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    waiter_add(&s->w, 1);
}

static fm_options *tier_opts(const char *tier, const char *msg_id)
{
    fm_options *o = fm_options_new();
    if (fm_options_set(o, "tier", tier) != FM_OK || (msg_id && fm_options_set(o, "msg_id", msg_id) != FM_OK)) {
        fm_options_free(o);
        return NULL;
    }
    return o;
}

CORE_TEST(publish_with_msg_id_stores_a_retry_once)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = tier_opts("persistent", "order-42");
    REQUIRE(o);
    fm_msg m = text_msg("once");
    fm_position first = {9, 9}, again = {9, 9};
    CHECK_OK(fm_publish_with(c, "dedup.created", &m, o, &first));
    CHECK_OK(fm_publish_with(c, "dedup.created", &m, o, &again)); /* a retry: same id */
    CHECK_MSG(first.offset == again.offset, "retry stored at %llu, first at %llu",
              (unsigned long long)again.offset, (unsigned long long)first.offset);
    fm_options_free(o);
    uint64_t latest = 0;
    CHECK_OK(fm_get_latest_offset(c, "dedup", 0, &latest));
    CHECK_MSG(latest == 1, "%llu messages stored, expected 1", (unsigned long long)latest);
    fm_client_close(c);
}

CORE_TEST(publish_with_async_tiers)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct tier_cb s;
    memset(&s, 0, sizeof s);
    waiter_init(&s.w);
    pthread_mutex_init(&s.mu, NULL);
    fm_msg m = text_msg("tiered");
    fm_options *persistent = tier_opts("persistent", "async-1");
    fm_options *memory = tier_opts("memory", NULL);
    fm_options *replicated = tier_opts("replicated", NULL);
    REQUIRE(persistent && memory && replicated);
    REQUIRE_OK(fm_publish_with_async(c, "tiered.a", &m, persistent, on_tier, &s));
    CHECK(waiter_wait(&s.w, 1, 10000 * slow()) == 1);
    REQUIRE_OK(fm_publish_with_async(c, "tiered.a", &m, persistent, on_tier, &s)); /* same id */
    CHECK(waiter_wait(&s.w, 2, 10000 * slow()) == 2);
    REQUIRE_OK(fm_publish_with_async(c, "tiered.b", &m, memory, on_tier, &s));
    CHECK(waiter_wait(&s.w, 3, 10000 * slow()) == 3);
    REQUIRE_OK(fm_publish_with_async(c, "tiered.c", &m, replicated, NULL, NULL)); /* NULL cb is fine */
    REQUIRE_OK(fm_publish_with_async(c, "tiered.c", &m, replicated, on_tier, &s));
    CHECK_OK(fm_flush(c, 10000 * slow()));
    CHECK(waiter_get(&s.w) == 4);
    pthread_mutex_lock(&s.mu);
    CHECK(s.status[0] == FM_OK && s.status[1] == FM_OK && s.status[2] == FM_OK);
    CHECK_MSG(s.offset[0] == 0 && s.offset[1] == 0, "offsets %llu, %llu", (unsigned long long)s.offset[0],
              (unsigned long long)s.offset[1]);
    CHECK(s.offset[2] == FM_OFFSET_NONE); /* memory tier: nothing stored */
    /* one copy only (mem://, a broker, one nats-server): refused in the callback, with the reason */
    CHECK_MSG(s.status[3] == FM_ERR_UNAVAILABLE, "replicated: %s", fm_status_str(s.status[3]));
    CHECK_MSG(strstr(s.error[3], "replicated") != NULL, "error: %s", s.error[3]);
    pthread_mutex_unlock(&s.mu);
    uint64_t latest = 9;
    CHECK_OK(fm_get_latest_offset(c, "tiered", 0, &latest));
    CHECK_MSG(latest == 1, "%llu stored, expected 1", (unsigned long long)latest);
    /* errors of the caller come back directly, the callback never runs */
    CHECK_ST(fm_publish_with_async(c, "tiered.*", &m, memory, on_tier, &s), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_publish_with_async(c, NULL, &m, memory, on_tier, &s), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_publish_with_async(NULL, "tiered.a", &m, memory, on_tier, &s), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_flush(c, 10000 * slow()));
    CHECK(waiter_get(&s.w) == 4);
    fm_options_free(persistent);
    fm_options_free(memory);
    fm_options_free(replicated);
    fm_client_close(c);
    pthread_mutex_destroy(&s.mu);
    waiter_destroy(&s.w);
}
