/* test_store.c - the document store through the C ABI: fm_store_call
 * (CRUD, queries, schemas, transactions), fm_store_subscribe /
 * fm_store_subscription_next / fm_store_unsubscribe (live queries),
 * fm_string_free, and their error statuses with the JSON detail in
 * fm_last_error(), on every engine. */
#include "harness.h"

/* Runs one request; on FM_OK *resp (if resp) gets the result (caller frees). */
static fm_status call(fm_client *c, const char *req, char **resp)
{
    char *out = (char *)0x1;
    fm_status st = fm_store_call(c, req, &out);
    if (st != FM_OK && out != NULL)
        harness_fail(__FILE__, __LINE__, "response not NULL after %s", fm_status_str(st));
    if (resp)
        *resp = out;
    else
        fm_string_free(out);
    return st;
}

/* True when the last error is JSON holding `code` (as "code":"...") and `part`. */
static int last_error_has(const char *code, const char *part)
{
    char want[128];
    snprintf(want, sizeof want, "\"code\":\"%s\"", code);
    const char *e = fm_last_error();
    return strstr(e, want) != NULL && (!part || strstr(e, part) != NULL);
}

CORE_TEST(store_crud_and_queries)
{
    fm_client *c = test_client();
    REQUIRE(c);
    char *r = NULL;
    CHECK_OK(call(c, "{\"type\":\"store.clear\",\"bucket\":\"users\"}", NULL));
    REQUIRE_OK(call(c, "{\"type\":\"store.insert\",\"bucket\":\"users\","
                       "\"data\":{\"id\":\"u1\",\"name\":\"Ann\",\"role\":\"admin\",\"age\":31}}", &r));
    CHECK(strstr(r, "\"id\":\"u1\"") && strstr(r, "\"_version\":1") && strstr(r, "\"_createdAt\":"));
    fm_string_free(r);
    CHECK_OK(call(c, "{\"type\":\"insert\",\"bucket\":\"users\",\"data\":{\"id\":\"u2\",\"name\":\"Bob\",\"role\":\"user\",\"age\":25}}", NULL));

    REQUIRE_OK(call(c, "{\"type\":\"store.get\",\"bucket\":\"users\",\"key\":\"u2\"}", &r));
    CHECK(strstr(r, "\"name\":\"Bob\"") != NULL);
    fm_string_free(r);
    REQUIRE_OK(call(c, "{\"type\":\"store.get\",\"bucket\":\"users\",\"key\":\"nobody\"}", &r));
    CHECK(r && strcmp(r, "null") == 0);
    fm_string_free(r);

    REQUIRE_OK(call(c, "{\"type\":\"store.update\",\"bucket\":\"users\",\"key\":\"u1\","
                       "\"data\":{\"age\":32},\"expectedVersion\":1}", &r));
    CHECK(strstr(r, "\"_version\":2") && strstr(r, "\"age\":32") && strstr(r, "\"name\":\"Ann\""));
    fm_string_free(r);
    CHECK_ST(call(c, "{\"type\":\"store.update\",\"bucket\":\"users\",\"key\":\"u1\","
                     "\"data\":{\"age\":33},\"expectedVersion\":1}", NULL), FM_ERR_CONFLICT);
    CHECK(last_error_has("CONFLICT", NULL));

    REQUIRE_OK(call(c, "{\"type\":\"store.where\",\"bucket\":\"users\",\"filter\":{\"age\":{\"$gt\":30}}}", &r));
    CHECK(strstr(r, "\"u1\"") && !strstr(r, "\"u2\""));
    fm_string_free(r);
    REQUIRE_OK(call(c, "{\"type\":\"store.count\",\"bucket\":\"users\"}", &r));
    CHECK(r && strcmp(r, "2") == 0);
    fm_string_free(r);
    REQUIRE_OK(call(c, "{\"type\":\"store.sum\",\"bucket\":\"users\",\"field\":\"age\"}", &r));
    CHECK(r && (strcmp(r, "57") == 0 || strcmp(r, "57.0") == 0));
    fm_string_free(r);
    REQUIRE_OK(call(c, "{\"type\":\"store.paginate\",\"bucket\":\"users\",\"limit\":1}", &r));
    CHECK(strstr(r, "\"hasMore\":true") && strstr(r, "\"nextCursor\":\"u1\""));
    fm_string_free(r);

    CHECK_OK(call(c, "{\"type\":\"store.delete\",\"bucket\":\"users\",\"key\":\"u2\"}", NULL));
    REQUIRE_OK(call(c, "{\"type\":\"store.all\",\"bucket\":\"users\"}", &r));
    CHECK(strstr(r, "\"u1\"") && !strstr(r, "\"u2\""));
    fm_string_free(r);
    fm_client_close(c);
}

CORE_TEST(store_schema_validation_errors)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(call(c, "{\"type\":\"store.defineBucket\",\"name\":\"people\",\"config\":{"
                     "\"schema\":{\"name\":{\"type\":\"string\",\"required\":true},"
                     "\"age\":{\"type\":\"integer\",\"min\":0}},\"indexes\":[\"name\"]}}", NULL));
    CHECK_ST(call(c, "{\"type\":\"store.defineBucket\",\"name\":\"people\",\"config\":{}}", NULL),
             FM_ERR_ALREADY_EXISTS);
    CHECK(last_error_has("ALREADY_EXISTS", NULL));

    /* Every failed field is in details; nothing is written. */
    CHECK_ST(call(c, "{\"type\":\"store.insert\",\"bucket\":\"people\",\"data\":{\"id\":\"p1\",\"age\":-1}}", NULL),
             FM_ERR_INVALID_ARGUMENT);
    CHECK_MSG(last_error_has("VALIDATION_ERROR", "\"details\":[") && strstr(fm_last_error(), "\"field\":\"name\"")
                  && strstr(fm_last_error(), "\"field\":\"age\""),
              "validation detail: %s", fm_last_error());
    char *r = NULL;
    REQUIRE_OK(call(c, "{\"type\":\"store.count\",\"bucket\":\"people\"}", &r));
    CHECK(r && strcmp(r, "0") == 0);
    fm_string_free(r);

    REQUIRE_OK(call(c, "{\"type\":\"store.getBucketSchema\",\"name\":\"people\"}", &r));
    CHECK(strstr(r, "\"indexes\":[\"name\"]") != NULL);
    fm_string_free(r);
    CHECK_ST(call(c, "{\"type\":\"store.getBucketSchema\",\"name\":\"nothing\"}", NULL), FM_ERR_NOT_FOUND);
    CHECK(last_error_has("BUCKET_NOT_DEFINED", NULL));
    CHECK_OK(call(c, "{\"type\":\"store.dropBucket\",\"name\":\"people\"}", NULL));

    /* Bad requests. */
    CHECK_ST(call(c, "{not json", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("INVALID_ARGUMENT", "not valid JSON"));
    CHECK_ST(call(c, "{\"type\":\"store.frobnicate\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("INVALID_ARGUMENT", "frobnicate"));
    CHECK_ST(call(c, "{\"type\":\"store.insert\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(c, "[1,2]", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(c, "{\"type\":\"store.get\",\"bucket\":\"\xff\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("INVALID_ARGUMENT", "UTF-8"));
    CHECK_ST(call(c, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_store_call(c, "{\"type\":\"store.buckets\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(NULL, "{\"type\":\"store.buckets\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    fm_string_free(NULL);
    fm_client_close(c);
    CHECK_ST(call(c, "{\"type\":\"store.buckets\"}", NULL), FM_ERR_CLOSED);
    CHECK(last_error_has("CLOSED", NULL));
}

CORE_TEST(store_transaction)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(call(c, "{\"type\":\"store.insert\",\"bucket\":\"accounts\",\"data\":{\"id\":\"a\",\"credits\":100}}", NULL));
    char *r = NULL;
    REQUIRE_OK(call(c, "{\"type\":\"store.transaction\",\"operations\":["
                       "{\"op\":\"get\",\"bucket\":\"accounts\",\"key\":\"a\"},"
                       "{\"op\":\"update\",\"bucket\":\"accounts\",\"key\":\"a\",\"data\":{\"credits\":400}},"
                       "{\"op\":\"insert\",\"bucket\":\"logs\",\"data\":{\"action\":\"credit\"}},"
                       "{\"op\":\"count\",\"bucket\":\"logs\",\"filter\":{\"action\":\"credit\"}}]}", &r));
    CHECK_MSG(r && strstr(r, "\"results\":[") && strstr(r, "\"credits\":400") && strstr(r, ",1]"), "%s", r);
    fm_string_free(r);
    /* A failing op writes nothing. */
    CHECK_ST(call(c, "{\"type\":\"store.transaction\",\"operations\":["
                     "{\"op\":\"insert\",\"bucket\":\"logs\",\"data\":{\"action\":\"lost\"}},"
                     "{\"op\":\"update\",\"bucket\":\"accounts\",\"key\":\"a\",\"data\":{},\"expectedVersion\":1}]}",
                     NULL),
             FM_ERR_CONFLICT);
    REQUIRE_OK(call(c, "{\"type\":\"store.count\",\"bucket\":\"logs\"}", &r));
    CHECK(r && strcmp(r, "1") == 0);
    fm_string_free(r);
    fm_client_close(c);
}

struct next_arg {
    fm_store_subscription *sub;
    fm_status st;
    struct waiter started;
};

static void *wait_next(void *p)
{
    struct next_arg *a = p;
    char *r = NULL;
    waiter_add(&a->started, 1);
    a->st = fm_store_subscription_next(a->sub, 60000 * slow(), &r);
    fm_string_free(r);
    return NULL;
}

CORE_TEST(store_live_query)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(call(c, "{\"type\":\"store.defineQuery\",\"name\":\"by-role\",\"definition\":"
                     "{\"type\":\"count\",\"bucket\":\"staff\",\"filter\":{\"role\":{\"$param\":\"role\"}}}}", NULL));
    CHECK_OK(call(c, "{\"type\":\"store.insert\",\"bucket\":\"staff\",\"data\":{\"role\":\"admin\"}}", NULL));

    fm_store_subscription *sub = NULL;
    REQUIRE_OK(fm_store_subscribe(c, "by-role", "{\"role\":\"admin\"}", &sub));
    char *r = NULL;
    long wait = 20000 * slow();
    REQUIRE_OK(fm_store_subscription_next(sub, wait, &r));
    CHECK_MSG(r && strcmp(r, "1") == 0, "first result %s", r ? r : "(none)");
    fm_string_free(r);
    /* A change that does not alter the result delivers nothing. */
    CHECK_OK(call(c, "{\"type\":\"store.insert\",\"bucket\":\"staff\",\"data\":{\"role\":\"user\"}}", NULL));
    CHECK_OK(call(c, "{\"type\":\"store.insert\",\"bucket\":\"staff\",\"data\":{\"role\":\"admin\"}}", NULL));
    r = NULL;
    REQUIRE_OK(fm_store_subscription_next(sub, wait, &r));
    CHECK_MSG(r && strcmp(r, "2") == 0, "after insert %s", r ? r : "(none)");
    fm_string_free(r);
    r = (char *)0x1;
    CHECK_OK(fm_store_subscription_next(sub, 50, &r)); /* nothing new: timeout */
    CHECK(r == NULL);

    /* Bad subscriptions. */
    fm_store_subscription *bad = (fm_store_subscription *)0x1;
    CHECK_ST(fm_store_subscribe(c, "no-such-query", NULL, &bad), FM_ERR_NOT_FOUND);
    CHECK(bad == NULL && last_error_has("QUERY_NOT_DEFINED", NULL));
    CHECK_ST(fm_store_subscribe(c, "by-role", NULL, &bad), FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("VALIDATION_ERROR", "role"));
    CHECK_ST(fm_store_subscribe(c, "by-role", "{oops", &bad), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_store_subscribe(c, "by-role", "[1]", &bad), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_store_subscribe(c, NULL, NULL, &bad), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_store_subscribe(c, "by-role", NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_store_subscription_next(sub, 0, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_store_subscription_next(NULL, 0, &r), FM_ERR_INVALID_ARGUMENT);

    /* Unsubscribing wakes a waiting next on another thread. */
    struct next_arg a = {.sub = sub, .st = -1};
    waiter_init(&a.started);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, wait_next, &a) == 0);
    waiter_wait(&a.started, 1, wait);
    sleep_ms(50);
    int64_t t0 = now_ms();
    CHECK_OK(fm_store_unsubscribe(sub));
    pthread_join(t, NULL);
    CHECK_MSG(a.st == FM_ERR_CLOSED, "waiting next returned %s", fm_status_str(a.st));
    CHECK_MSG(now_ms() - t0 < wait, "unsubscribe took %lld ms", (long long)(now_ms() - t0));
    waiter_destroy(&a.started);
    CHECK_ST(fm_store_unsubscribe(sub), FM_ERR_CLOSED);
    CHECK_ST(fm_store_subscription_next(sub, 0, &r), FM_ERR_CLOSED);
    CHECK_OK(fm_store_unsubscribe(NULL));

    /* A subscription outliving its client answers CLOSED, then frees. */
    REQUIRE_OK(fm_store_subscribe(c, "by-role", "{\"role\":\"user\"}", &sub));
    fm_client_close(c);
    r = NULL;
    CHECK_ST(fm_store_subscription_next(sub, 0, &r), FM_ERR_CLOSED);
    CHECK(r == NULL);
    CHECK_OK(fm_store_unsubscribe(sub));
}

CORE_TEST(store_live_query_fan_out)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(call(c, "{\"type\":\"store.defineQuery\",\"name\":\"everyone\",\"definition\":"
                     "{\"type\":\"all\",\"bucket\":\"crew\"}}", NULL));
    enum { SUBS = 20 };
    fm_store_subscription *subs[SUBS];
    for (int i = 0; i < SUBS; i++) {
        subs[i] = NULL;
        CHECK_OK(fm_store_subscribe(c, "everyone", NULL, &subs[i]));
    }
    CHECK_OK(call(c, "{\"type\":\"store.insert\",\"bucket\":\"crew\",\"data\":{\"id\":\"x\"}}", NULL));
    long wait = 20000 * slow();
    for (int i = 0; i < SUBS; i++) {
        /* The current result first: [] or, when the insert landed before the
         * first delivery, already [x]; after [] comes [x]. */
        char *r = NULL;
        CHECK_OK(fm_store_subscription_next(subs[i], wait, &r));
        REQUIRE(r != NULL);
        if (strcmp(r, "[]") == 0) {
            fm_string_free(r);
            r = NULL;
            CHECK_OK(fm_store_subscription_next(subs[i], wait, &r));
        }
        CHECK_MSG(r && strstr(r, "\"id\":\"x\""), "subscriber %d got %s", i, r ? r : "(none)");
        fm_string_free(r);
        CHECK_OK(fm_store_unsubscribe(subs[i]));
    }
    fm_client_close(c);
}
