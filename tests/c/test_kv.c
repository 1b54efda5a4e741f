/* test_kv.c - set/get/get_entry/exists/delete/list, cas conflicts, TTL
 * expiry, watch PUT/DELETE/EXPIRE order, fm_buf and fm_strings. */
#include "harness.h"

static uint64_t set_text(fm_client *c, const char *b, const char *k, const char *v,
                         uint64_t ttl)
{
    uint64_t rev = 0;
    CHECK_OK(fm_kv_set(c, b, k, (const uint8_t *)v, strlen(v), ttl, &rev));
    return rev;
}

CORE_TEST(kv_set_get_exists_delete)
{
    fm_client *c = test_client();
    REQUIRE(c);
    uint64_t r1 = set_text(c, "cfg", "color", "red", 0);
    CHECK(r1 >= 1);
    uint64_t r2 = set_text(c, "cfg", "color", "green", 0);
    CHECK(r2 > r1);
    CHECK_OK(fm_kv_set(c, "cfg", "size", (const uint8_t *)"L", 1, 0, NULL)); /* rev out NULL */

    fm_buf *buf = NULL;
    REQUIRE_OK(fm_kv_get(c, "cfg", "color", &buf));
    REQUIRE(buf);
    size_t len = 0;
    const uint8_t *d = fm_buf_data(buf, &len);
    CHECK(bytes_eq(d, len, "green"));
    CHECK(fm_buf_data(buf, NULL) == d);
    fm_buf_free(buf);

    buf = NULL;
    uint64_t rev = 0;
    REQUIRE_OK(fm_kv_get_entry(c, "cfg", "color", &buf, &rev));
    CHECK(rev == r2);
    d = fm_buf_data(buf, &len);
    CHECK(bytes_eq(d, len, "green"));
    fm_buf_free(buf);
    buf = NULL;
    CHECK_OK(fm_kv_get_entry(c, "cfg", "color", &buf, NULL)); /* revision_out NULL */
    fm_buf_free(buf);

    bool ex = false;
    CHECK_OK(fm_kv_exists(c, "cfg", "color", &ex));
    CHECK(ex);
    CHECK_OK(fm_kv_exists(c, "cfg", "nope", &ex));
    CHECK(!ex);
    CHECK_OK(fm_kv_exists(c, "never-used-bucket", "nope", &ex));
    CHECK(!ex);

    buf = (fm_buf *)0x1;
    CHECK_ST(fm_kv_get(c, "cfg", "nope", &buf), FM_ERR_NOT_FOUND);
    CHECK(buf == NULL);
    buf = (fm_buf *)0x1;
    CHECK_ST(fm_kv_get_entry(c, "cfg", "nope", &buf, &rev), FM_ERR_NOT_FOUND);
    CHECK(buf == NULL);
    CHECK_ST(fm_kv_get(c, "never-used-bucket", "k", &buf), FM_ERR_NOT_FOUND);

    CHECK_OK(fm_kv_delete(c, "cfg", "color"));
    CHECK_ST(fm_kv_get(c, "cfg", "color", &buf), FM_ERR_NOT_FOUND);
    CHECK_OK(fm_kv_exists(c, "cfg", "color", &ex));
    CHECK(!ex);
    CHECK_OK(fm_kv_delete(c, "cfg", "color")); /* OK if absent */
    CHECK_OK(fm_kv_delete(c, "never-used-bucket", "k"));

    /* empty and binary values */
    CHECK_OK(fm_kv_set(c, "cfg", "empty", NULL, 0, 0, NULL));
    buf = NULL;
    REQUIRE_OK(fm_kv_get(c, "cfg", "empty", &buf));
    fm_buf_data(buf, &len);
    CHECK(len == 0);
    fm_buf_free(buf);
    const uint8_t bin[5] = {0, 1, 0, 255, 7};
    CHECK_OK(fm_kv_set(c, "cfg", "bin", bin, 5, 0, NULL));
    buf = NULL;
    REQUIRE_OK(fm_kv_get(c, "cfg", "bin", &buf));
    d = fm_buf_data(buf, &len);
    CHECK(len == 5 && memcmp(d, bin, 5) == 0);
    fm_buf_free(buf);

    /* keys: up to 1024 bytes of UTF-8 */
    char key[1026];
    memset(key, 'k', 1024);
    key[1024] = 0;
    CHECK_OK(fm_kv_set(c, "cfg", key, bin, 1, 0, NULL));
    key[1024] = 'k';
    key[1025] = 0;
    CHECK_ST(fm_kv_set(c, "cfg", key, bin, 1, 0, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_kv_set(c, "cfg", "caf\xc3\xa9/\xe2\x9c\x93", bin, 1, 0, NULL)); /* UTF-8 key */
    CHECK_OK(fm_kv_exists(c, "cfg", "caf\xc3\xa9/\xe2\x9c\x93", &ex));
    CHECK(ex);
    fm_client_close(c);
}

CORE_TEST(kv_cas_conflicts)
{
    fm_client *c = test_client();
    REQUIRE(c);
    const uint8_t *v1 = (const uint8_t *)"one", *v2 = (const uint8_t *)"two";
    uint64_t rev = 0, rev2 = 0;
    CHECK_OK(fm_kv_cas(c, "b", "k", v1, 3, 0, &rev)); /* 0 = must not exist */
    CHECK(rev >= 1);
    CHECK_ST(fm_kv_cas(c, "b", "k", v2, 3, 0, &rev2), FM_ERR_CONFLICT);
    CHECK(strlen(fm_last_error()) > 0);
    CHECK_ST(fm_kv_cas(c, "b", "k", v2, 3, rev + 100, &rev2), FM_ERR_CONFLICT);
    CHECK_OK(fm_kv_cas(c, "b", "k", v2, 3, rev, &rev2));
    CHECK(rev2 > rev);
    CHECK_ST(fm_kv_cas(c, "b", "k", v1, 3, rev, NULL), FM_ERR_CONFLICT); /* stale */
    fm_buf *buf = NULL;
    REQUIRE_OK(fm_kv_get(c, "b", "k", &buf));
    size_t len;
    const uint8_t *d = fm_buf_data(buf, &len);
    CHECK(bytes_eq(d, len, "two")); /* the failed cas changed nothing */
    fm_buf_free(buf);
    /* absent key with a nonzero expected revision */
    CHECK_ST(fm_kv_cas(c, "b", "absent", v1, 3, 1, NULL), FM_ERR_CONFLICT);
    /* after delete, expected 0 works again */
    CHECK_OK(fm_kv_delete(c, "b", "k"));
    CHECK_OK(fm_kv_cas(c, "b", "k", v1, 3, 0, NULL));
    fm_client_close(c);
}

struct racer {
    fm_client *c;
    int wins;
    int conflicts;
    int errors;
};

static void *cas_racer(void *p)
{
    struct racer *r = p;
    for (int i = 0; i < 50; i++) {
        fm_buf *buf = NULL;
        uint64_t rev = 0;
        if (fm_kv_get_entry(r->c, "race", "counter", &buf, &rev) != FM_OK) {
            r->errors++;
            continue;
        }
        size_t len;
        const uint8_t *d = fm_buf_data(buf, &len);
        char tmp[32] = {0};
        memcpy(tmp, d, len < 31 ? len : 31);
        fm_buf_free(buf);
        char next[32];
        int n = snprintf(next, sizeof next, "%ld", strtol(tmp, NULL, 10) + 1);
        fm_status st = fm_kv_cas(r->c, "race", "counter", (const uint8_t *)next, (size_t)n, rev, NULL);
        if (st == FM_OK)
            r->wins++;
        else if (st == FM_ERR_CONFLICT)
            r->conflicts++;
        else
            r->errors++;
    }
    return NULL;
}

CORE_TEST(kv_cas_is_atomic_across_threads)
{
    fm_client *c = test_client();
    REQUIRE(c);
    REQUIRE_OK(fm_kv_set(c, "race", "counter", (const uint8_t *)"0", 1, 0, NULL));
    enum { T = 4 };
    pthread_t t[T];
    struct racer r[T];
    for (int i = 0; i < T; i++) {
        r[i] = (struct racer){c, 0, 0, 0};
        pthread_create(&t[i], NULL, cas_racer, &r[i]);
    }
    int wins = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        wins += r[i].wins;
        CHECK(r[i].errors == 0);
    }
    fm_buf *buf = NULL;
    REQUIRE_OK(fm_kv_get(c, "race", "counter", &buf));
    size_t len;
    const uint8_t *d = fm_buf_data(buf, &len);
    char tmp[32] = {0};
    memcpy(tmp, d, len < 31 ? len : 31);
    fm_buf_free(buf);
    CHECK_MSG(strtol(tmp, NULL, 10) == wins, "counter %s but %d cas calls won", tmp, wins);
    fm_client_close(c);
}

CORE_TEST(kv_list_keys_sorted_by_prefix)
{
    fm_client *c = test_client();
    REQUIRE(c);
    const char *keys[] = {"user.b", "user.a", "admin.z", "user.c", "usr"};
    for (int i = 0; i < 5; i++)
        set_text(c, "dir", keys[i], "v", 0);
    fm_strings *s = NULL;
    REQUIRE_OK(fm_kv_list_keys(c, "dir", "user.", &s));
    REQUIRE(fm_strings_len(s) == 3);
    CHECK(strcmp(fm_strings_get(s, 0), "user.a") == 0);
    CHECK(strcmp(fm_strings_get(s, 1), "user.b") == 0);
    CHECK(strcmp(fm_strings_get(s, 2), "user.c") == 0);
    CHECK(fm_strings_get(s, 3) == NULL);
    fm_strings_free(s);
    s = NULL;
    REQUIRE_OK(fm_kv_list_keys(c, "dir", NULL, &s)); /* NULL = all */
    CHECK(fm_strings_len(s) == 5);
    if (fm_strings_len(s) == 5) {
        CHECK(strcmp(fm_strings_get(s, 0), "admin.z") == 0);
        CHECK(strcmp(fm_strings_get(s, 4), "usr") == 0);
    }
    fm_strings_free(s);
    s = NULL;
    REQUIRE_OK(fm_kv_list_keys(c, "dir", "", &s));
    CHECK(fm_strings_len(s) == 5);
    fm_strings_free(s);
    s = NULL;
    REQUIRE_OK(fm_kv_list_keys(c, "dir", "zzz", &s));
    CHECK(s != NULL && fm_strings_len(s) == 0);
    fm_strings_free(s);
    s = NULL;
    REQUIRE_OK(fm_kv_list_keys(c, "empty-bucket", "", &s));
    CHECK(s != NULL && fm_strings_len(s) == 0);
    fm_strings_free(s);
    /* deleted keys disappear */
    CHECK_OK(fm_kv_delete(c, "dir", "user.b"));
    s = NULL;
    REQUIRE_OK(fm_kv_list_keys(c, "dir", "user.", &s));
    CHECK(fm_strings_len(s) == 2);
    fm_strings_free(s);
    fm_client_close(c);
}

CORE_TEST(kv_ttl_expiry)
{
    fm_client *c = test_client();
    REQUIRE(c);
    /* measured from before the set: the TTL starts when the engine applies
     * it, so the calls below (slow on file:// with fsync) count too */
    int64_t t_set = now_ms();
    set_text(c, "ttl", "short", "v", 150);
    set_text(c, "ttl", "forever", "v", 0);
    bool ex = false;
    CHECK_OK(fm_kv_exists(c, "ttl", "short", &ex));
    CHECK(ex);
    fm_buf *buf = NULL;
    CHECK_OK(fm_kv_get(c, "ttl", "short", &buf));
    fm_buf_free(buf);
    buf = NULL;
    /* bounded poll until it is gone */
    int64_t t0 = now_ms(), deadline = t0 + 5000 * slow();
    fm_status st = FM_OK;
    while (now_ms() < deadline) {
        st = fm_kv_get(c, "ttl", "short", &buf);
        fm_buf_free(buf);
        buf = NULL;
        if (st != FM_OK)
            break;
        sleep_ms(10);
    }
    CHECK_ST(st, FM_ERR_NOT_FOUND);
    CHECK_MSG(now_ms() - t_set >= 140, "TTL 150 ms expired after %lld ms",
              (long long)(now_ms() - t_set));
    CHECK_OK(fm_kv_exists(c, "ttl", "short", &ex));
    CHECK(!ex);
    fm_strings *s = NULL;
    CHECK_OK(fm_kv_list_keys(c, "ttl", "", &s));
    CHECK(fm_strings_len(s) == 1);
    fm_strings_free(s);
    /* cas on an expired key: behaves as absent */
    CHECK_OK(fm_kv_cas(c, "ttl", "short", (const uint8_t *)"x", 1, 0, NULL));
    /* setting again without TTL removes the TTL */
    set_text(c, "ttl", "renew", "v", 100);
    set_text(c, "ttl", "renew", "v", 0);
    sleep_ms(250);
    CHECK_OK(fm_kv_exists(c, "ttl", "renew", &ex));
    CHECK_MSG(ex, "a key re-set without TTL still expired");
    fm_client_close(c);
}

/* ---- watch ------------------------------------------------------------ */

#define MAX_EV 64
struct kv_events {
    struct waiter w;
    pthread_t main_thread;
    int on_main_thread;
    int op[MAX_EV];
    char key[MAX_EV][32];
    char value[MAX_EV][32];
    uint64_t rev[MAX_EV];
};

static void on_kv(void *ud, fm_kv_op op, const char *key, const uint8_t *value,
                  size_t len, uint64_t revision)
{
    struct kv_events *e = ud;
    pthread_mutex_lock(&e->w.mu);
    if (pthread_equal(pthread_self(), e->main_thread))
        e->on_main_thread++;
    long i = e->w.count;
    if (i < MAX_EV) {
        e->op[i] = (int)op;
        snprintf(e->key[i], sizeof e->key[i], "%s", key ? key : "(null)");
        snprintf(e->value[i], sizeof e->value[i], "%.*s", (int)len,
                 value ? (const char *)value : "");
        e->rev[i] = revision;
    }
    e->w.count++;
    pthread_cond_broadcast(&e->w.cv);
    pthread_mutex_unlock(&e->w.mu);
}

CORE_TEST(kv_watch_put_delete_expire_in_order)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct kv_events *e = calloc(1, sizeof *e);
    REQUIRE(e);
    waiter_init(&e->w);
    e->main_thread = pthread_self();
    set_text(c, "w", "app.before", "not seen", 0); /* before the watch */
    fm_subscription *sub = NULL;
    REQUIRE_OK(fm_kv_watch(c, "w", "app.", on_kv, e, &sub));
    REQUIRE(sub);
    uint64_t r1 = set_text(c, "w", "app.a", "1", 0);
    set_text(c, "w", "other.x", "filtered out", 0);
    uint64_t r2 = set_text(c, "w", "app.t", "temp", 100);
    uint64_t r3 = set_text(c, "w", "app.a", "2", 0);
    CHECK_OK(fm_kv_delete(c, "w", "app.a"));
    CHECK_OK(fm_kv_delete(c, "w", "app.absent")); /* absent: no event */
    long got = waiter_wait(&e->w, 5, 10000 * slow());
    CHECK_MSG(got == 5, "%ld of 5 watch events", got);
    sleep_ms(50);
    pthread_mutex_lock(&e->w.mu);
    CHECK_MSG(e->w.count == 5, "%ld watch events, expected 5", e->w.count);
    static const int want_op[] = {FM_KV_PUT, FM_KV_PUT, FM_KV_PUT, FM_KV_DELETE, FM_KV_EXPIRE};
    static const char *want_key[] = {"app.a", "app.t", "app.a", "app.a", "app.t"};
    static const char *want_val[] = {"1", "temp", "2", "", ""};
    for (int i = 0; i < 5 && i < e->w.count; i++) {
        CHECK_MSG(e->op[i] == want_op[i] && strcmp(e->key[i], want_key[i]) == 0 &&
                      strcmp(e->value[i], want_val[i]) == 0,
                  "event %d: op %d key %s value '%s', expected op %d key %s value '%s'", i,
                  e->op[i], e->key[i], e->value[i], want_op[i], want_key[i], want_val[i]);
    }
    CHECK(e->rev[0] == r1 && e->rev[1] == r2 && e->rev[2] == r3);
    CHECK(e->rev[3] > r3); /* a delete gets a new revision */
    CHECK(e->on_main_thread == 0);
    pthread_mutex_unlock(&e->w.mu);

    /* fm_unsubscribe ends a watch: no further events */
    CHECK_OK(fm_unsubscribe(sub));
    long before = waiter_get(&e->w);
    set_text(c, "w", "app.after", "x", 0);
    sleep_ms(50);
    CHECK(waiter_get(&e->w) == before);
    fm_client_close(c);
    waiter_destroy(&e->w);
    free(e);
}

CORE_TEST(kv_watch_all_keys_and_many_watchers)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct kv_events *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    REQUIRE(a && b);
    waiter_init(&a->w);
    waiter_init(&b->w);
    fm_subscription *sa = NULL, *sb = NULL;
    REQUIRE_OK(fm_kv_watch(c, "w2", NULL, on_kv, a, &sa)); /* NULL = all keys */
    REQUIRE_OK(fm_kv_watch(c, "w2", "", on_kv, b, &sb));
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%02d", i);
        set_text(c, "w2", k, "v", 0);
    }
    CHECK(waiter_wait(&a->w, 20, 10000 * slow()) == 20);
    CHECK(waiter_wait(&b->w, 20, 10000 * slow()) == 20);
    for (int i = 1; i < 20; i++)
        CHECK(a->rev[i] > a->rev[i - 1]);
    CHECK(strcmp(a->key[19], "k19") == 0);
    CHECK_OK(fm_unsubscribe(sa));
    CHECK_OK(fm_unsubscribe(sb));
    /* watch on another bucket sees nothing of this one */
    fm_client_close(c);
    waiter_destroy(&a->w);
    waiter_destroy(&b->w);
    free(a);
    free(b);
}
