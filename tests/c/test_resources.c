/* test_resources.c - resource lifecycle: fm_streams_list, fm_queues_list,
 * fm_kv_buckets_list, fm_stream_delete, fm_queue_delete,
 * fm_kv_bucket_delete, fm_stream_purge, fm_queue_purge, fm_queue_extend,
 * fm_stream_update, with their error statuses, on every engine. */
#include "harness.h"
#include "broker.h"

#include <sys/stat.h>
#include <unistd.h>

static void publish_text(fm_client *c, const char *stream, const char *text)
{
    fm_msg m = text_msg(text);
    CHECK_OK(fm_publish(c, stream, &m, NULL));
}

static void enqueue_text(fm_client *c, const char *queue, const char *text, uint64_t delay_ms)
{
    fm_msg m = text_msg(text);
    CHECK_OK(fm_queue_enqueue(c, queue, &m, delay_ms, 0, NULL));
}

/* True when list `l` holds exactly the qualified forms of names[0..n). */
static int list_is(fm_strings *l, const char *const *names, size_t n)
{
    if (fm_strings_len(l) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char want[256];
        const char *got = fm_strings_get(l, i);
        if (!got || strcmp(got, qualified(want, sizeof want, names[i])) != 0)
            return 0;
    }
    return 1;
}

CORE_TEST(resources_list_streams_queues_buckets)
{
    fm_client *c = test_client();
    REQUIRE(c);
    publish_text(c, "orders", "a");
    publish_text(c, "orders-eu", "b");
    publish_text(c, "payments", "c");
    enqueue_text(c, "jobs", "j", 0);
    CHECK_OK(fm_kv_set(c, "settings", "k", (const uint8_t *)"v", 1, 0, NULL));

    fm_strings *l = NULL;
    REQUIRE_OK(fm_streams_list(c, "ord", &l));
    const char *orders[] = {"orders", "orders-eu"};
    CHECK(list_is(l, orders, 2));
    fm_strings_free(l);
    l = NULL;
    CHECK_OK(fm_streams_list(c, NULL, &l)); /* NULL prefix = all */
    const char *all[] = {"orders", "orders-eu", "payments"};
    CHECK(list_is(l, all, 3));
    fm_strings_free(l);
    l = NULL;
    CHECK_OK(fm_streams_list(c, "zzz", &l));
    CHECK(l != NULL && fm_strings_len(l) == 0);
    fm_strings_free(l);
    l = NULL;
    CHECK_OK(fm_queues_list(c, "", &l));
    const char *jobs[] = {"jobs"};
    CHECK(list_is(l, jobs, 1));
    fm_strings_free(l);
    l = NULL;
    CHECK_OK(fm_kv_buckets_list(c, "set", &l));
    const char *buckets[] = {"settings"};
    CHECK(list_is(l, buckets, 1));
    fm_strings_free(l);

    /* Bad input: *out is NULL afterwards. */
    l = (fm_strings *)0x1;
    CHECK_ST(fm_streams_list(c, "bad prefix", &l), FM_ERR_INVALID_ARGUMENT);
    CHECK(l == NULL);
    CHECK_ST(fm_queues_list(c, "", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_kv_buckets_list(NULL, "", &l), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_streams_list(c, "\xff", &l), FM_ERR_INVALID_ARGUMENT);
    fm_client_close(c);
    CHECK_ST(fm_streams_list(c, "", &l), FM_ERR_CLOSED);
    CHECK_ST(fm_queues_list(c, "", &l), FM_ERR_CLOSED);
    CHECK_ST(fm_kv_buckets_list(c, "", &l), FM_ERR_CLOSED);
}

static void count_msg(void *ud, const struct fm_message *m)
{
    (void)m;
    waiter_add((struct waiter *)ud, 1);
}

static void count_kv(void *ud, enum fm_kv_op op, const char *key, const uint8_t *value, size_t len,
                     uint64_t revision)
{
    (void)op, (void)key, (void)value, (void)len, (void)revision;
    waiter_add((struct waiter *)ud, 1);
}

/* Polls (bounded) until fm_subscription_status is no longer FM_OK. */
static fm_status wait_ended(fm_subscription *s)
{
    int64_t deadline = now_ms() + 10000 * slow();
    fm_status st;
    while ((st = fm_subscription_status(s)) == FM_OK && now_ms() < deadline)
        sleep_ms(10);
    return st;
}

CORE_TEST(resources_delete_ends_subscriptions_watches_and_pulls)
{
    fm_client *c = test_client();
    REQUIRE(c);
    publish_text(c, "gone", "old");
    struct waiter w;
    waiter_init(&w);
    fm_subscription *sub = NULL, *pull = NULL, *watch = NULL;
    fm_options *o = fm_options_new();
    CHECK_OK(fm_options_set(o, "start", "earliest"));
    REQUIRE_OK(fm_subscribe(c, "gone", o, count_msg, &w, &sub));
    REQUIRE_OK(fm_subscribe_pull(c, "gone", o, &pull));
    fm_options_free(o);
    CHECK(waiter_wait(&w, 1, 10000 * slow()) >= 1);
    CHECK_OK(fm_kv_set(c, "conf", "k", (const uint8_t *)"v", 1, 0, NULL));
    REQUIRE_OK(fm_kv_watch(c, "conf", "", count_kv, &w, &watch));

    CHECK_OK(fm_stream_delete(c, "gone"));
    CHECK_ST(wait_ended(sub), FM_ERR_NOT_FOUND);
    fm_messages *batch = NULL;
    fm_status st = FM_OK;
    for (int i = 0; i < 100 && st == FM_OK; i++) { /* drain what came before the delete */
        st = fm_subscription_next(pull, 16, 200, &batch);
        fm_messages_free(batch);
        batch = NULL;
    }
    CHECK_ST(st, FM_ERR_NOT_FOUND);
    CHECK_ST(fm_stream_delete(c, "gone"), FM_ERR_NOT_FOUND);
    uint32_t parts = 0;
    CHECK_ST(fm_stream_partitions(c, "gone", &parts), FM_ERR_NOT_FOUND);

    CHECK_OK(fm_kv_bucket_delete(c, "conf"));
    CHECK_ST(wait_ended(watch), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_kv_bucket_delete(c, "conf"), FM_ERR_NOT_FOUND);

    enqueue_text(c, "work", "j", 0);
    CHECK_OK(fm_queue_delete(c, "work"));
    CHECK_ST(fm_queue_delete(c, "work"), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_queue_delete(c, "never"), FM_ERR_NOT_FOUND);

    /* A later publish re-creates the stream empty. */
    fm_position pos = {0};
    fm_msg m = text_msg("new");
    CHECK_OK(fm_publish(c, "gone", &m, &pos));
    CHECK(pos.offset == 0);

    CHECK_ST(fm_stream_delete(c, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_queue_delete(c, "a/b"), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_kv_bucket_delete(NULL, "conf"), FM_ERR_INVALID_ARGUMENT);
    fm_unsubscribe(sub);
    fm_unsubscribe(pull);
    fm_unsubscribe(watch);
    waiter_destroy(&w);
    fm_client_close(c);
    CHECK_ST(fm_stream_delete(c, "gone"), FM_ERR_CLOSED);
    CHECK_ST(fm_queue_delete(c, "work"), FM_ERR_CLOSED);
    CHECK_ST(fm_kv_bucket_delete(c, "conf"), FM_ERR_CLOSED);
}

CORE_TEST(resources_purge_stream_and_queue)
{
    fm_client *c = test_client();
    REQUIRE(c);
    for (int i = 0; i < 5; i++)
        publish_text(c, "log", "m");
    CHECK_OK(fm_commit_offset(c, "log", "g", 0, 1));
    uint64_t removed = 0;
    CHECK_OK(fm_stream_purge(c, "log", &removed));
    CHECK(removed == 5);
    CHECK_OK(fm_stream_purge(c, "log", NULL)); /* removed_out may be NULL */
    uint64_t off = 0;
    CHECK_OK(fm_get_offset(c, "log", "g", 0, &off));
    CHECK_MSG(off == 4, "committed offset clamped to 4, got %llu", (unsigned long long)off);
    CHECK_OK(fm_get_latest_offset(c, "log", 0, &off));
    CHECK(off == 5);
    fm_position pos = {0};
    fm_msg m = text_msg("after");
    CHECK_OK(fm_publish(c, "log", &m, &pos));
    CHECK(pos.offset == 5);
    removed = 7;
    CHECK_ST(fm_stream_purge(c, "never", &removed), FM_ERR_NOT_FOUND);
    CHECK(removed == 0);

    enqueue_text(c, "q", "a", 0);
    enqueue_text(c, "q", "b", 0);
    enqueue_text(c, "q", "later", 60000);
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "q", 60000, 1000, &job));
    REQUIRE(job);
    CHECK_OK(fm_queue_purge(c, "q", &removed));
    CHECK(removed == 2);
    fm_queue_stats s;
    CHECK_OK(fm_queue_get_stats(c, "q", &s));
    CHECK(s.pending == 0 && s.delayed == 0 && s.in_flight == 1);
    CHECK_OK(fm_queue_ack(c, "q", fm_job_id(job)));
    fm_job_free(job);
    CHECK_ST(fm_queue_purge(c, "never", &removed), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_stream_purge(c, NULL, &removed), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_queue_purge(NULL, "q", &removed), FM_ERR_INVALID_ARGUMENT);
    fm_client_close(c);
    CHECK_ST(fm_stream_purge(c, "log", &removed), FM_ERR_CLOSED);
    CHECK_ST(fm_queue_purge(c, "q", &removed), FM_ERR_CLOSED);
}

CORE_TEST(resources_queue_extend)
{
    fm_client *c = test_client();
    REQUIRE(c);
    enqueue_text(c, "slow", "job", 0);
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "slow", 300, 1000, &job));
    REQUIRE(job);
    uint64_t id = fm_job_id(job);
    fm_job_free(job);
    CHECK_OK(fm_queue_extend(c, "slow", id, 60000));
    job = NULL;
    CHECK_OK(fm_queue_reserve(c, "slow", 1000, 700, &job));
    CHECK_MSG(job == NULL, "an extended job was redelivered");
    fm_job_free(job);
    CHECK_ST(fm_queue_extend(c, "slow", id, 0), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_queue_extend(c, "slow", id + 1000, 1000), FM_ERR_NOT_FOUND);
    CHECK_OK(fm_queue_ack(c, "slow", id));
    CHECK_ST(fm_queue_extend(c, "slow", id, 1000), FM_ERR_NOT_FOUND);

    /* Visibility ran out before the extend: FM_ERR_CONFLICT. */
    enqueue_text(c, "slow", "job2", 0);
    job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "slow", 50, 1000, &job));
    REQUIRE(job);
    id = fm_job_id(job);
    fm_job_free(job);
    sleep_ms(300);
    CHECK_ST(fm_queue_extend(c, "slow", id, 60000), FM_ERR_CONFLICT);
    CHECK_ST(fm_queue_extend(c, NULL, id, 1000), FM_ERR_INVALID_ARGUMENT);
    fm_client_close(c);
    CHECK_ST(fm_queue_extend(c, "slow", id, 1000), FM_ERR_CLOSED);
}

CORE_TEST(resources_stream_update)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_options *o = fm_options_new();
    CHECK_OK(fm_options_set(o, "partitions", "2"));
    REQUIRE_OK(fm_stream_create(c, "cfg", o));
    fm_options_free(o);

    o = fm_options_new();
    CHECK_OK(fm_options_set(o, "partitions", "4"));
    CHECK_OK(fm_options_set(o, "max_age_ms", "3600000"));
    CHECK_OK(fm_stream_update(c, "cfg", o));
    fm_options_free(o);
    uint32_t parts = 0;
    CHECK_OK(fm_stream_partitions(c, "cfg", &parts));
    CHECK(parts == 4);

    o = fm_options_new();
    CHECK_OK(fm_options_set(o, "partitions", "3"));
    CHECK_ST(fm_stream_update(c, "cfg", o), FM_ERR_INVALID_ARGUMENT); /* may only grow */
    fm_options_free(o);
    o = fm_options_new();
    CHECK_OK(fm_options_set(o, "tier", "memory"));
    CHECK_ST(fm_stream_update(c, "cfg", o), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = fm_options_new();
    CHECK_ST(fm_stream_update(c, "cfg", o), FM_ERR_INVALID_ARGUMENT); /* nothing to change */
    CHECK_ST(fm_stream_update(c, "cfg", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_options_set(o, "group", "g")); /* a subscribe key */
    CHECK_ST(fm_stream_update(c, "cfg", o), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
    o = fm_options_new();
    CHECK_OK(fm_options_set(o, "max_messages", "10"));
    CHECK_ST(fm_stream_update(c, "never", o), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_stream_update(NULL, "cfg", o), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_stream_update(c, "cfg", o));
    fm_client_close(c);
    CHECK_ST(fm_stream_update(c, "cfg", o), FM_ERR_CLOSED);
    fm_options_free(o);
}

/* file://: a delete frees the directory and survives a restart. */
TEST(resources_file_delete_survives_restart)
{
    char dir[] = "/tmp/fm-resources-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char url[128], path[256];
    snprintf(url, sizeof url, "file://%s", dir);
    fm_client *c = NULL;
    REQUIRE_OK(fm_client_connect(url, NULL, &c));
    publish_text(c, "gone", "x");
    publish_text(c, "kept", "y");
    snprintf(path, sizeof path, "%s/streams/default/default/gone", dir);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK_OK(fm_stream_delete(c, "gone"));
    CHECK(stat(path, &st) != 0);
    fm_client_close(c);
    c = NULL;
    REQUIRE_OK(fm_client_connect(url, NULL, &c));
    fm_strings *l = NULL;
    CHECK_OK(fm_streams_list(c, "", &l));
    CHECK(fm_strings_len(l) == 1 && strcmp(fm_strings_get(l, 0), "default/default/kept") == 0);
    fm_strings_free(l);
    CHECK_ST(fm_stream_delete(c, "gone"), FM_ERR_NOT_FOUND);
    fm_client_close(c);
    rm_tree(dir);
}
