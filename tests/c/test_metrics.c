/* test_metrics.c - fm_client_metrics: exact counters after a known
 * workload, histogram lines present, bad arguments, closed client. */
#include "harness.h"

/* The whole text of the client's metrics, NUL-terminated (caller frees). */
static char *metrics_text(fm_client *c)
{
    fm_buf *buf = NULL;
    if (fm_client_metrics(c, &buf) != FM_OK || !buf)
        return NULL;
    size_t len = 0;
    const uint8_t *d = fm_buf_data(buf, &len);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, d, len);
        s[len] = '\0';
    }
    fm_buf_free(buf);
    return s;
}

/* True if `text` has a line that is exactly `line`. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

CORE_TEST(metrics_exact_counts)
{
    fm_client *c = test_client();
    REQUIRE(c);
    for (int i = 0; i < 3; i++) {
        fm_msg m = text_msg("12345");
        CHECK_OK(fm_publish(c, "metered", &m, NULL));
    }
    CHECK_OK(fm_kv_set(c, "mb", "k", (const uint8_t *)"v", 1, 0, NULL));
    fm_buf *missing = NULL;
    CHECK_ST(fm_kv_get(c, "mb", "absent", &missing), FM_ERR_NOT_FOUND);

    char *t = metrics_text(c);
    REQUIRE(t);
    CHECK(has_line(t, "flowmesh_client_operations_total{op=\"publish\",status=\"ok\"} 3"));
    CHECK(has_line(t, "flowmesh_client_operations_total{op=\"kv_set\",status=\"ok\"} 1"));
    CHECK(has_line(t, "flowmesh_client_operations_total{op=\"kv_get\",status=\"not_found\"} 1"));
    CHECK(has_line(t, "flowmesh_client_messages_published_total 3"));
    CHECK(has_line(t, "flowmesh_client_published_bytes_total 15"));
    CHECK(has_line(t, "flowmesh_client_in_flight 0"));
    CHECK(has_line(t, "# TYPE flowmesh_client_operation_duration_seconds histogram"));
    CHECK(has_line(t, "flowmesh_client_operation_duration_seconds_count{op=\"publish\"} 3"));
    CHECK(has_line(t, "flowmesh_client_operation_duration_seconds_bucket{op=\"publish\",le=\"+Inf\"} 3"));
    free(t);
    fm_client_close(c);
}

CORE_TEST(metrics_bad_arguments)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_buf *buf = (fm_buf *)0x1;
    CHECK_ST(fm_client_metrics(NULL, &buf), FM_ERR_INVALID_ARGUMENT);
    CHECK(buf == NULL);
    CHECK_ST(fm_client_metrics(c, NULL), FM_ERR_INVALID_ARGUMENT);
    /* Two calls give two independent buffers. */
    fm_buf *a = NULL, *b = NULL;
    CHECK_OK(fm_client_metrics(c, &a));
    CHECK_OK(fm_client_metrics(c, &b));
    CHECK(a && b && a != b);
    fm_buf_free(a);
    fm_buf_free(b);
    fm_client_close(c);
    buf = (fm_buf *)0x1;
    CHECK_ST(fm_client_metrics(c, &buf), FM_ERR_CLOSED);
    CHECK(buf == NULL);
}

CORE_TEST(memory_tier_stream_is_bounded)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = fm_options_new();
    REQUIRE(o);
    CHECK_ST(fm_options_set(o, "tier", "fast"), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_options_set(o, "tier", "memory"));
    CHECK_OK(fm_options_set(o, "max_messages", "5"));
    CHECK_OK(fm_stream_create(c, "hot", o));
    fm_options_free(o);
    /* The same name in the durable tier is another stream configuration. */
    CHECK_ST(fm_stream_create(c, "hot", NULL), FM_ERR_ALREADY_EXISTS);
    for (int i = 0; i < 8; i++) {
        fm_msg m = text_msg("x");
        CHECK_OK(fm_publish(c, "hot", &m, NULL));
    }
    uint64_t latest = 0;
    CHECK_OK(fm_get_latest_offset(c, "hot", 0, &latest));
    CHECK(latest == 8);
    fm_messages *ms = NULL;
    REQUIRE_OK(fm_read(c, "hot", 0, 0, 100, &ms));
    CHECK(fm_messages_len(ms) == 5); /* the oldest 3 were dropped */
    if (fm_messages_len(ms) > 0)
        CHECK(fm_messages_get(ms, 0)->offset == 3);
    fm_messages_free(ms);
    fm_client_close(c);
}
