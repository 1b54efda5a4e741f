/* test_basics.c - version, status names, last error, options, connect,
 * NULL arguments, invalid UTF-8, closed clients, oversize payloads. */
#include "harness.h"

#include <ctype.h>

static const char BAD_UTF8[] = "bad\xff\xfe";

TEST(version_is_semver)
{
    const char *v = fm_version();
    REQUIRE(v != NULL);
    unsigned a, b, c;
    char tail;
    CHECK_MSG(sscanf(v, "%u.%u.%u%c", &a, &b, &c, &tail) == 3,
              "fm_version() = \"%s\" is not MAJOR.MINOR.PATCH", v);
    CHECK(fm_version() == v); /* static storage */
#ifdef FM_EXPECTED_VERSION
    /* The Makefile passes Cargo.toml's version: the library carries it. */
    CHECK_MSG(strcmp(v, FM_EXPECTED_VERSION) == 0, "fm_version() = \"%s\", Cargo.toml says %s", v,
              FM_EXPECTED_VERSION);
#endif
}

TEST(status_str_names_every_code)
{
    static const char *names[] = {
        "FM_OK", "FM_ERR_INVALID_ARGUMENT", "FM_ERR_NOT_FOUND", "FM_ERR_TIMEOUT",
        "FM_ERR_DISCONNECTED", "FM_ERR_UNAUTHORIZED", "FM_ERR_CLOSED",
        "FM_ERR_ALREADY_EXISTS", "FM_ERR_CONFLICT", "FM_ERR_TOO_LARGE",
        "FM_ERR_UNAVAILABLE", "FM_ERR_INTERNAL"};
    /* The values are fixed by docs/ABI.md. */
    CHECK(FM_OK == 0 && FM_ERR_INVALID_ARGUMENT == 1 && FM_ERR_NOT_FOUND == 2 &&
          FM_ERR_TIMEOUT == 3 && FM_ERR_DISCONNECTED == 4 && FM_ERR_UNAUTHORIZED == 5 &&
          FM_ERR_CLOSED == 6 && FM_ERR_ALREADY_EXISTS == 7 && FM_ERR_CONFLICT == 8 &&
          FM_ERR_TOO_LARGE == 9 && FM_ERR_UNAVAILABLE == 10 && FM_ERR_INTERNAL == 11);
    for (int i = 0; i < 12; i++) {
        const char *s = fm_status_str(i);
        CHECK_MSG(s && strcmp(s, names[i]) == 0, "fm_status_str(%d) = %s", i, s ? s : "NULL");
    }
    CHECK(strcmp(fm_status_str(12), "FM_ERR_UNKNOWN") == 0);
    CHECK(strcmp(fm_status_str(-1), "FM_ERR_UNKNOWN") == 0);
    CHECK(strcmp(fm_status_str(INT32_MAX), "FM_ERR_UNKNOWN") == 0);
}

TEST(last_error_is_per_call_and_per_thread)
{
    fm_client *c = NULL;
    CHECK_ST(fm_client_connect("nope://x", NULL, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
    const char *e = fm_last_error();
    REQUIRE(e != NULL);
    CHECK_MSG(strlen(e) > 0, "fm_last_error() empty after a failure");
    c = mem_client();
    REQUIRE(c);
    CHECK(fm_last_error() != NULL && fm_last_error()[0] == '\0');
    fm_client_close(c);
}

static void *other_thread_last_error(void *arg)
{
    /* A fresh thread has no error detail. */
    const char *e = fm_last_error();
    *(int *)arg = e != NULL && e[0] == '\0';
    return NULL;
}

TEST(last_error_other_thread_is_empty)
{
    CHECK_ST(fm_options_set(NULL, "tenant", "x"), FM_ERR_INVALID_ARGUMENT);
    CHECK(fm_last_error()[0] != '\0');
    int empty = 0;
    pthread_t t;
    pthread_create(&t, NULL, other_thread_last_error, &empty);
    pthread_join(t, NULL);
    CHECK_MSG(empty, "a new thread saw another thread's last error");
}

TEST(options_keys_and_values)
{
    fm_options *o = fm_options_new();
    REQUIRE(o != NULL);
    /* every documented key with a good value */
    static const char *good[][2] = {
        {"tenant", "acme"}, {"namespace", "prod"}, {"max_payload_bytes", "1024"},
        {"fsync", "batch"}, {"fsync", "interval"}, {"fsync", "none"},
        {"fsync_interval_ms", "10"}, {"worker_threads", "2"},
        {"connect_timeout_ms", "5000"}, {"request_timeout_ms", "5000"},
        {"token", "secret"}, {"group", "g1"}, {"partition", "0"},
        {"start", "earliest"}, {"start", "latest"}, {"start", "committed"},
        {"start", "42"}, {"auto_commit", "true"}, {"auto_commit", "false"},
        {"partitions", "4"}, {"max_age_ms", "0"}, {"max_bytes", "1000"},
        {"max_messages", "10"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_MSG(fm_options_set(o, good[i][0], good[i][1]) == FM_OK,
                  "fm_options_set(%s, %s) failed: %s", good[i][0], good[i][1],
                  fm_last_error());
    /* unknown keys */
    CHECK_ST(fm_options_set(o, "colour", "red"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, "", "x"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, "Tenant", "x"), FM_ERR_INVALID_ARGUMENT);
    /* bad values */
    static const char *bad[][2] = {
        {"partitions", "-1"}, {"partitions", "four"}, {"max_payload_bytes", ""},
        {"auto_commit", "maybe"}, {"start", "yesterday"}, {"fsync", "sometimes"},
        {"tenant", "a/b"}, {"tenant", ".."}, {"namespace", ""}, {"worker_threads", "1.5"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(fm_options_set(o, bad[i][0], bad[i][1]) == FM_ERR_INVALID_ARGUMENT,
                  "fm_options_set(%s, \"%s\") accepted a bad value", bad[i][0], bad[i][1]);
    /* NULLs and invalid UTF-8 */
    CHECK_ST(fm_options_set(NULL, "tenant", "x"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, NULL, "x"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, "tenant", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, BAD_UTF8, "x"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_options_set(o, "token", BAD_UTF8), FM_ERR_INVALID_ARGUMENT);
    CHECK(fm_last_error()[0] != '\0');
    fm_options_free(o);
    fm_options_free(NULL);
}

TEST(connect_errors)
{
    fm_client *c = (fm_client *)0x1;
    CHECK_ST(fm_client_connect(NULL, NULL, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
    CHECK_ST(fm_client_connect("mem://", NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_client_connect("", NULL, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_client_connect("http://localhost", NULL, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_client_connect("file://", NULL, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_client_connect("mem://\xff", NULL, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
    /* an option that exists but does not apply to connect */
    fm_options *o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "group", "g"));
    CHECK_ST(fm_client_connect("mem://", o, &c), FM_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
    fm_options_free(o);
    /* good connect options; opts is copied, we free it before use */
    o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "tenant", "acme"));
    REQUIRE_OK(fm_options_set(o, "namespace", "prod"));
    REQUIRE_OK(fm_options_set(o, "worker_threads", "1"));
    REQUIRE_OK(fm_client_connect("mem://", o, &c));
    fm_options_free(o);
    CHECK_OK(fm_client_health(c));
    CHECK_OK(fm_client_readiness(c));
    fm_msg m = text_msg("x");
    CHECK_OK(fm_publish(c, "s", &m, NULL));
    fm_messages *ms = NULL;
    CHECK_OK(fm_read(c, "acme/prod/s", 0, 0, 10, &ms));
    CHECK(fm_messages_len(ms) == 1);
    if (fm_messages_len(ms) == 1)
        CHECK(strcmp(fm_messages_get(ms, 0)->stream, "acme/prod/s") == 0);
    fm_messages_free(ms);
    fm_client_close(c);
    fm_client_close(NULL); /* no-op */
}

/* Every client function: NULL client -> INVALID_ARGUMENT, closed -> CLOSED. */
static void noop_msg_cb(void *ud, const fm_message *m) { (void)ud; (void)m; }
static void noop_pub_cb(void *ud, fm_status s, fm_position p) { (void)ud; (void)s; (void)p; }
static void noop_kv_cb(void *ud, fm_kv_op op, const char *k, const uint8_t *v,
                       size_t n, uint64_t r)
{
    (void)ud; (void)op; (void)k; (void)v; (void)n; (void)r;
}

static void all_calls_return(fm_client *c, fm_status want)
{
    fm_msg m = text_msg("payload");
    fm_position pos;
    fm_messages *ms = NULL;
    fm_subscription *sub = NULL;
    uint64_t u64 = 0;
    uint32_t u32 = 0;
    fm_job *job = NULL;
    fm_jobs *jobs = NULL;
    fm_queue_stats stats;
    fm_retry_policy pol;
    fm_buf *buf = NULL;
    bool b = false;
    fm_strings *strs = NULL;
    const uint8_t v[] = "v";

    CHECK_ST(fm_client_health(c), want);
    CHECK_ST(fm_client_readiness(c), want);
    CHECK_ST(fm_publish(c, "s", &m, &pos), want);
    CHECK_ST(fm_publish_batch(c, "s", &m, 1, &pos), want);
    CHECK_ST(fm_publish_async(c, "s", &m, noop_pub_cb, NULL), want);
    CHECK_ST(fm_flush(c, 100), want);
    CHECK_ST(fm_read(c, "s", 0, 0, 10, &ms), want);
    CHECK(ms == NULL);
    CHECK_ST(fm_subscribe(c, "s", NULL, noop_msg_cb, NULL, &sub), want);
    CHECK(sub == NULL);
    CHECK_ST(fm_commit_offset(c, "s", "g", 0, 0), want);
    CHECK_ST(fm_get_offset(c, "s", "g", 0, &u64), want);
    CHECK_ST(fm_get_latest_offset(c, "s", 0, &u64), want);
    CHECK_ST(fm_stream_create(c, "s", NULL), want);
    CHECK_ST(fm_stream_partitions(c, "s", &u32), want);
    CHECK_ST(fm_queue_enqueue(c, "q", &m, 0, 0, &u64), want);
    CHECK_ST(fm_queue_reserve(c, "q", 1000, 0, &job), want);
    CHECK(job == NULL);
    CHECK_ST(fm_queue_receive(c, "q", 1, 1000, 0, &jobs), want);
    CHECK(jobs == NULL);
    CHECK_ST(fm_queue_ack(c, "q", 1), want);
    CHECK_ST(fm_queue_nack(c, "q", 1, 0), want);
    CHECK_ST(fm_queue_get_stats(c, "q", &stats), want);
    CHECK_ST(fm_queue_set_retry_policy(c, "q", 3, 10, 100, 2.0), want);
    CHECK_ST(fm_queue_get_retry_policy(c, "q", &pol), want);
    CHECK_ST(fm_queue_dlq_list(c, "q", 0, &jobs), want);
    CHECK(jobs == NULL);
    CHECK_ST(fm_queue_dlq_replay(c, "q", 1), want);
    CHECK_ST(fm_queue_dlq_replay_all(c, "q", NULL, NULL, &u64), want);
    CHECK_ST(fm_kv_set(c, "b", "k", v, 1, 0, &u64), want);
    CHECK_ST(fm_kv_cas(c, "b", "k", v, 1, 0, &u64), want);
    CHECK_ST(fm_kv_get(c, "b", "k", &buf), want);
    CHECK(buf == NULL);
    CHECK_ST(fm_kv_get_entry(c, "b", "k", &buf, &u64), want);
    CHECK(buf == NULL);
    CHECK_ST(fm_kv_delete(c, "b", "k"), want);
    CHECK_ST(fm_kv_exists(c, "b", "k", &b), want);
    CHECK_ST(fm_kv_list_keys(c, "b", "", &strs), want);
    CHECK(strs == NULL);
    CHECK_ST(fm_kv_watch(c, "b", "", noop_kv_cb, NULL, &sub), want);
    CHECK(sub == NULL);
    CHECK_ST(fm_streams_list(c, "", &strs), want);
    CHECK(strs == NULL);
    CHECK_ST(fm_queues_list(c, "", &strs), want);
    CHECK(strs == NULL);
    CHECK_ST(fm_kv_buckets_list(c, "", &strs), want);
    CHECK(strs == NULL);
    CHECK_ST(fm_stream_delete(c, "s"), want);
    CHECK_ST(fm_queue_delete(c, "q"), want);
    CHECK_ST(fm_kv_bucket_delete(c, "b"), want);
    CHECK_ST(fm_stream_purge(c, "s", &u64), want);
    CHECK_ST(fm_queue_purge(c, "q", &u64), want);
    CHECK_ST(fm_queue_extend(c, "q", 1, 1000), want);
    fm_options *upd = fm_options_new();
    fm_options_set(upd, "max_messages", "1");
    CHECK_ST(fm_stream_update(c, "s", upd), want);
    fm_options_free(upd);
    /* in case a call wrongly succeeded, do not leak */
    fm_messages_free(ms);
    fm_job_free(job);
    fm_jobs_free(jobs);
    fm_buf_free(buf);
    fm_strings_free(strs);
    if (sub)
        fm_unsubscribe(sub);
}

TEST(null_client_is_invalid_argument)
{
    all_calls_return(NULL, FM_ERR_INVALID_ARGUMENT);
}

CORE_TEST(closed_client_is_closed)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_client_close(c);
    /* The stale handle is only a key inside the library: never dereferenced. */
    all_calls_return(c, FM_ERR_CLOSED);
}

/* NULL / invalid UTF-8 / bad names for each argument of each function. */
CORE_TEST(null_and_invalid_arguments)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_msg m = text_msg("x");
    fm_position pos;
    fm_messages *ms = NULL;
    fm_subscription *sub = NULL;
    uint64_t u64;
    uint32_t u32;
    fm_job *job = NULL;
    fm_jobs *jobs = NULL;
    fm_queue_stats stats;
    fm_retry_policy pol;
    fm_buf *buf = NULL;
    bool b;
    fm_strings *strs = NULL;
    const uint8_t v[] = "v";
    const fm_status INV = FM_ERR_INVALID_ARGUMENT;
    static const char *bad_names[] = {NULL, BAD_UTF8, "", "a/b", "..", ".",
                                      "a/b/c/d", "has space", "t/n/"};

    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        const char *n = bad_names[i];
        const char *shown = n ? n : "(NULL)";
        CHECK_MSG(fm_publish(c, n, &m, &pos) == INV, "publish name %s", shown);
        CHECK_MSG(fm_publish_batch(c, n, &m, 1, NULL) == INV, "publish_batch name %s", shown);
        CHECK_MSG(fm_publish_async(c, n, &m, NULL, NULL) == INV, "publish_async name %s", shown);
        CHECK_MSG(fm_read(c, n, 0, 0, 1, &ms) == INV, "read name %s", shown);
        CHECK_MSG(fm_subscribe(c, n, NULL, noop_msg_cb, NULL, &sub) == INV, "subscribe name %s", shown);
        CHECK_MSG(fm_commit_offset(c, n, "g", 0, 0) == INV, "commit name %s", shown);
        CHECK_MSG(fm_get_offset(c, n, "g", 0, &u64) == INV, "get_offset name %s", shown);
        CHECK_MSG(fm_get_latest_offset(c, n, 0, &u64) == INV, "latest name %s", shown);
        CHECK_MSG(fm_stream_create(c, n, NULL) == INV, "stream_create name %s", shown);
        CHECK_MSG(fm_stream_partitions(c, n, &u32) == INV, "partitions name %s", shown);
        CHECK_MSG(fm_queue_enqueue(c, n, &m, 0, 0, NULL) == INV, "enqueue name %s", shown);
        CHECK_MSG(fm_queue_reserve(c, n, 0, 0, &job) == INV, "reserve name %s", shown);
        CHECK_MSG(fm_queue_receive(c, n, 1, 0, 0, &jobs) == INV, "receive name %s", shown);
        CHECK_MSG(fm_queue_ack(c, n, 1) == INV, "ack name %s", shown);
        CHECK_MSG(fm_queue_nack(c, n, 1, 0) == INV, "nack name %s", shown);
        CHECK_MSG(fm_queue_get_stats(c, n, &stats) == INV, "stats name %s", shown);
        CHECK_MSG(fm_queue_set_retry_policy(c, n, 1, 1, 1, 1.0) == INV, "set_retry name %s", shown);
        CHECK_MSG(fm_queue_get_retry_policy(c, n, &pol) == INV, "get_retry name %s", shown);
        CHECK_MSG(fm_queue_dlq_list(c, n, 0, &jobs) == INV, "dlq_list name %s", shown);
        CHECK_MSG(fm_queue_dlq_replay(c, n, 1) == INV, "dlq_replay name %s", shown);
        CHECK_MSG(fm_queue_dlq_replay_all(c, n, NULL, NULL, NULL) == INV, "dlq_replay_all name %s", shown);
        CHECK_MSG(fm_kv_set(c, n, "k", v, 1, 0, NULL) == INV, "kv_set bucket %s", shown);
        CHECK_MSG(fm_kv_cas(c, n, "k", v, 1, 0, NULL) == INV, "kv_cas bucket %s", shown);
        CHECK_MSG(fm_kv_get(c, n, "k", &buf) == INV, "kv_get bucket %s", shown);
        CHECK_MSG(fm_kv_get_entry(c, n, "k", &buf, NULL) == INV, "kv_get_entry bucket %s", shown);
        CHECK_MSG(fm_kv_delete(c, n, "k") == INV, "kv_delete bucket %s", shown);
        CHECK_MSG(fm_kv_exists(c, n, "k", &b) == INV, "kv_exists bucket %s", shown);
        CHECK_MSG(fm_kv_list_keys(c, n, "", &strs) == INV, "kv_list bucket %s", shown);
        CHECK_MSG(fm_kv_watch(c, n, "", noop_kv_cb, NULL, &sub) == INV, "kv_watch bucket %s", shown);
    }
    CHECK(ms == NULL && sub == NULL && job == NULL && jobs == NULL && buf == NULL && strs == NULL);

    /* NULL message / out-parameters / callbacks */
    CHECK_ST(fm_publish(c, "s", NULL, &pos), INV);
    CHECK_ST(fm_publish_batch(c, "s", NULL, 2, NULL), INV);
    CHECK_ST(fm_publish_async(c, "s", NULL, NULL, NULL), INV);
    CHECK_ST(fm_read(c, "s", 0, 0, 1, NULL), INV);
    CHECK_ST(fm_subscribe(c, "s", NULL, NULL, NULL, &sub), INV);
    CHECK_ST(fm_subscribe(c, "s", NULL, noop_msg_cb, NULL, NULL), INV);
    CHECK_ST(fm_commit_offset(c, "s", NULL, 0, 0), INV);
    CHECK_ST(fm_commit_offset(c, "s", BAD_UTF8, 0, 0), INV);
    CHECK_ST(fm_get_offset(c, "s", NULL, 0, &u64), INV);
    CHECK_ST(fm_get_offset(c, "s", "g", 0, NULL), INV);
    CHECK_ST(fm_get_latest_offset(c, "s", 0, NULL), INV);
    CHECK_ST(fm_stream_partitions(c, "s", NULL), INV);
    CHECK_ST(fm_queue_enqueue(c, "q", NULL, 0, 0, NULL), INV);
    CHECK_ST(fm_queue_reserve(c, "q", 0, 0, NULL), INV);
    CHECK_ST(fm_queue_receive(c, "q", 1, 0, 0, NULL), INV);
    CHECK_ST(fm_queue_receive(c, "q", 0, 0, 0, &jobs), INV); /* max_jobs >= 1 */
    CHECK_ST(fm_queue_get_stats(c, "q", NULL), INV);
    CHECK_ST(fm_queue_get_retry_policy(c, "q", NULL), INV);
    CHECK_ST(fm_queue_set_retry_policy(c, "q", 3, 10, 100, 0.5), INV); /* multiplier < 1 */
    CHECK_ST(fm_queue_dlq_list(c, "q", 0, NULL), INV);
    CHECK_ST(fm_queue_dlq_replay_all(c, "q", BAD_UTF8, "x", NULL), INV);
    CHECK_ST(fm_kv_set(c, "b", NULL, v, 1, 0, NULL), INV);
    CHECK_ST(fm_kv_set(c, "b", BAD_UTF8, v, 1, 0, NULL), INV);
    CHECK_ST(fm_kv_set(c, "b", "", v, 1, 0, NULL), INV); /* key is 1-1024 bytes */
    CHECK_ST(fm_kv_set(c, "b", "k", NULL, 5, 0, NULL), INV);
    CHECK_ST(fm_kv_cas(c, "b", NULL, v, 1, 0, NULL), INV);
    CHECK_ST(fm_kv_cas(c, "b", "k", NULL, 5, 0, NULL), INV);
    CHECK_ST(fm_kv_get(c, "b", NULL, &buf), INV);
    CHECK_ST(fm_kv_get(c, "b", BAD_UTF8, &buf), INV);
    CHECK_ST(fm_kv_get(c, "b", "k", NULL), INV);
    CHECK_ST(fm_kv_get_entry(c, "b", "k", NULL, NULL), INV);
    CHECK_ST(fm_kv_delete(c, "b", NULL), INV);
    CHECK_ST(fm_kv_exists(c, "b", NULL, &b), INV);
    CHECK_ST(fm_kv_exists(c, "b", "k", NULL), INV);
    CHECK_ST(fm_kv_list_keys(c, "b", BAD_UTF8, &strs), INV);
    CHECK_ST(fm_kv_list_keys(c, "b", "", NULL), INV);
    CHECK_ST(fm_kv_watch(c, "b", "", NULL, NULL, &sub), INV);
    CHECK_ST(fm_kv_watch(c, "b", "", noop_kv_cb, NULL, NULL), INV);
    CHECK_ST(fm_kv_watch(c, "b", BAD_UTF8, noop_kv_cb, NULL, &sub), INV);
    CHECK(buf == NULL && strs == NULL && sub == NULL && jobs == NULL);

    /* payload / key / headers of a message */
    fm_msg bad = text_msg("x");
    bad.payload = NULL; /* with payload_len 1 */
    CHECK_ST(fm_publish(c, "s", &bad, NULL), INV);
    CHECK_ST(fm_queue_enqueue(c, "q", &bad, 0, 0, NULL), INV);
    bad = text_msg("x");
    bad.headers_len = 2; /* headers NULL */
    CHECK_ST(fm_publish(c, "s", &bad, NULL), INV);
    fm_header h1 = {NULL, "v"}, h2 = {"k", NULL}, h3 = {BAD_UTF8, "v"}, h4 = {"k", BAD_UTF8};
    fm_header *hs[] = {&h1, &h2, &h3, &h4};
    for (int i = 0; i < 4; i++) {
        bad = text_msg("x");
        bad.headers = hs[i];
        bad.headers_len = 1;
        CHECK_MSG(fm_publish(c, "s", &bad, NULL) == INV, "publish header %d", i);
        CHECK_MSG(fm_publish_async(c, "s", &bad, NULL, NULL) == INV, "publish_async header %d", i);
        CHECK_MSG(fm_queue_enqueue(c, "q", &bad, 0, 0, NULL) == INV, "enqueue header %d", i);
    }
    /* a batch with one bad message stores none */
    fm_msg batch[3] = {text_msg("a"), text_msg("b"), text_msg("c")};
    batch[2].headers = &h3;
    batch[2].headers_len = 1;
    CHECK_ST(fm_publish_batch(c, "batchbad", batch, 3, NULL), INV);
    CHECK_ST(fm_read(c, "batchbad", 0, 0, 10, &ms), FM_ERR_NOT_FOUND);
    fm_messages_free(ms);
    /* NULL is fine with length 0 */
    fm_msg empty = {0};
    CHECK_OK(fm_publish(c, "s", &empty, NULL));
    CHECK_OK(fm_kv_set(c, "b", "k", NULL, 0, 0, NULL));
    CHECK_OK(fm_publish_batch(c, "s", NULL, 0, NULL));

    fm_client_close(c);
}

TEST(free_functions_accept_null)
{
    fm_options_free(NULL);
    fm_client_close(NULL);
    fm_messages_free(NULL);
    fm_job_free(NULL);
    fm_jobs_free(NULL);
    fm_buf_free(NULL);
    fm_strings_free(NULL);
    CHECK_OK(fm_unsubscribe(NULL));
    /* accessors on NULL */
    size_t len = 99;
    CHECK(fm_messages_len(NULL) == 0);
    CHECK(fm_messages_get(NULL, 0) == NULL);
    CHECK(fm_jobs_len(NULL) == 0);
    CHECK(fm_jobs_get(NULL, 0) == NULL);
    CHECK(fm_strings_len(NULL) == 0);
    CHECK(fm_strings_get(NULL, 0) == NULL);
    CHECK(fm_job_id(NULL) == 0);
    CHECK(fm_job_attempt(NULL) == 0);
    CHECK(fm_job_priority(NULL) == 0);
    CHECK(fm_job_payload(NULL, &len) == NULL && len == 0);
    CHECK(fm_job_header(NULL, "k") == NULL);
    CHECK(fm_job_headers_len(NULL) == 0);
    CHECK(fm_job_headers(NULL) == NULL);
    len = 99;
    CHECK(fm_buf_data(NULL, &len) == NULL);
}

/* Payload limit: max_payload_bytes on connect. */
CORE_TEST(oversize_payload_is_too_large)
{
    fm_options *o = fm_options_new();
    REQUIRE_OK(fm_options_set(o, "max_payload_bytes", "1024"));
    fm_client *c = test_client_opts(o);
    fm_options_free(o);
    REQUIRE(c);

    uint8_t *big = calloc(1, 1025);
    REQUIRE(big);
    fm_msg ok = {.payload = big, .payload_len = 1024};
    fm_msg over = {.payload = big, .payload_len = 1025};
    CHECK_OK(fm_publish(c, "s", &ok, NULL));
    CHECK_ST(fm_publish(c, "s", &over, NULL), FM_ERR_TOO_LARGE);
    CHECK(strlen(fm_last_error()) > 0);
    fm_msg mixed[2] = {ok, over};
    CHECK_ST(fm_publish_batch(c, "s", mixed, 2, NULL), FM_ERR_TOO_LARGE);
    CHECK_ST(fm_publish_async(c, "s", &over, NULL, NULL), FM_ERR_TOO_LARGE);
    CHECK_OK(fm_flush(c, 5000 * slow()));
    CHECK_OK(fm_queue_enqueue(c, "q", &ok, 0, 0, NULL));
    CHECK_ST(fm_queue_enqueue(c, "q", &over, 0, 0, NULL), FM_ERR_TOO_LARGE);
    CHECK_OK(fm_kv_set(c, "b", "k", big, 1024, 0, NULL));
    CHECK_ST(fm_kv_set(c, "b", "k", big, 1025, 0, NULL), FM_ERR_TOO_LARGE);
    CHECK_ST(fm_kv_cas(c, "b", "k2", big, 1025, 0, NULL), FM_ERR_TOO_LARGE);
    /* nothing oversize was stored */
    uint64_t latest = 0;
    CHECK_OK(fm_get_latest_offset(c, "s", 0, &latest));
    CHECK_MSG(latest == 1, "latest offset %llu, expected 1", (unsigned long long)latest);
    bool exists = true;
    CHECK_OK(fm_kv_exists(c, "b", "k2", &exists));
    CHECK(!exists);
    free(big);
    fm_client_close(c);
}

CORE_TEST(default_payload_limit_is_8_mib)
{
    fm_client *c = test_client();
    REQUIRE(c);
    size_t n = 8u << 20;
    uint8_t *big = calloc(1, n + 1);
    REQUIRE(big);
    fm_msg ok = {.payload = big, .payload_len = n};
    fm_msg over = {.payload = big, .payload_len = n + 1};
    CHECK_OK(fm_publish(c, "s", &ok, NULL));
    CHECK_ST(fm_publish(c, "s", &over, NULL), FM_ERR_TOO_LARGE);
    free(big);
    fm_client_close(c);
}
