/*
 * kv_watch.c - key-value with revisions, compare-and-set, TTL and a watch.
 *
 *   usage: kv_watch [URL]     (default "mem://")
 *
 * A watch calls back for every change under a key prefix, in revision order,
 * on a library thread: PUT (set), DELETE and EXPIRE (a TTL ran out).
 *
 * Build against an installed library:
 *     cc kv_watch.c $(pkg-config --cflags --libs flowmesh) -o kv_watch
 */
#include <flowmesh.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                        \
    do {                                                                   \
        fm_status st_ = (call);                                            \
        if (st_ != FM_OK) {                                                \
            fprintf(stderr, "FAILED: %s -> %s (%s)\n", #call,              \
                    fm_status_str(st_), fm_last_error());                  \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int events;

static void on_change(void *user_data, fm_kv_op op, const char *key,
                      const uint8_t *value, size_t len, uint64_t revision)
{
    (void)user_data;
    const char *name = op == FM_KV_PUT ? "PUT" : op == FM_KV_DELETE ? "DELETE" : "EXPIRE";
    /* value is empty (len 0, maybe NULL) for DELETE and EXPIRE. */
    printf("watch: %-6s %s = '%.*s' (revision %llu)\n", name, key, (int)len,
           value ? (const char *)value : "", (unsigned long long)revision);
    pthread_mutex_lock(&mu);
    events++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static int wait_events(int want, int seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += seconds;
    pthread_mutex_lock(&mu);
    while (events < want && pthread_cond_timedwait(&cv, &mu, &deadline) == 0) {
    }
    int got = events;
    pthread_mutex_unlock(&mu);
    return got;
}

static void set(fm_client *c, const char *key, const char *value, uint64_t ttl_ms)
{
    uint64_t rev;
    CHECK(fm_kv_set(c, "config", key, (const uint8_t *)value, strlen(value), ttl_ms, &rev));
    printf("set %s = '%s' -> revision %llu\n", key, value, (unsigned long long)rev);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "mem://";
    fm_client *c = NULL;
    CHECK(fm_client_connect(url, NULL, &c));

    fm_subscription *watch = NULL;
    CHECK(fm_kv_watch(c, "config", "feature.", on_change, NULL, &watch));

    set(c, "feature.search", "on", 0);
    set(c, "feature.beta", "on", 200); /* expires after 200 ms */
    set(c, "other.key", "not watched", 0);

    /* Compare-and-set: succeeds only at the revision we read. */
    fm_buf *buf = NULL;
    uint64_t rev = 0;
    CHECK(fm_kv_get_entry(c, "config", "feature.search", &buf, &rev));
    fm_buf_free(buf);
    const char *off = "off";
    CHECK(fm_kv_cas(c, "config", "feature.search", (const uint8_t *)off, 3, rev, &rev));
    printf("cas feature.search = 'off' -> revision %llu\n", (unsigned long long)rev);
    fm_status st = fm_kv_cas(c, "config", "feature.search", (const uint8_t *)off, 3, 1, NULL);
    printf("cas with a stale revision -> %s (expected FM_ERR_CONFLICT)\n", fm_status_str(st));

    fm_strings *keys = NULL;
    CHECK(fm_kv_list_keys(c, "config", "feature.", &keys));
    for (size_t i = 0; i < fm_strings_len(keys); i++)
        printf("key: %s\n", fm_strings_get(keys, i));
    fm_strings_free(keys);

    CHECK(fm_kv_delete(c, "config", "feature.search"));

    /* PUT, PUT, PUT (cas), DELETE, then EXPIRE of feature.beta. */
    int got = wait_events(5, 10);
    CHECK(fm_unsubscribe(watch));
    fm_client_close(c);
    if (got < 5) {
        fprintf(stderr, "FAILED: %d of 5 watch events arrived\n", got);
        return 1;
    }
    return 0;
}
