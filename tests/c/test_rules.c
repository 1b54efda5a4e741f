/* test_rules.c - the rules engine and procedures through the C ABI:
 * fm_rules_call (events, facts, rules, stats), fm_rules_subscribe /
 * fm_rules_subscription_next / fm_rules_unsubscribe (topic
 * subscriptions), fm_procedures_call, and their error statuses with the
 * JSON detail in fm_last_error(), on every engine. */
#include "harness.h"

typedef fm_status (*call_fn)(fm_client *, const char *, char **);

static fm_status call_with(call_fn f, fm_client *c, const char *req, char **resp)
{
    char *out = (char *)0x1;
    fm_status st = f(c, req, &out);
    if (st != FM_OK && out != NULL)
        harness_fail(__FILE__, __LINE__, "response not NULL after %s", fm_status_str(st));
    if (resp)
        *resp = out;
    else
        fm_string_free(out);
    return st;
}

static fm_status rules(fm_client *c, const char *req, char **resp)
{
    return call_with(fm_rules_call, c, req, resp);
}

static fm_status procs(fm_client *c, const char *req, char **resp)
{
    return call_with(fm_procedures_call, c, req, resp);
}

static int last_error_has(const char *code, const char *part)
{
    char want[128];
    snprintf(want, sizeof want, "\"code\":\"%s\"", code);
    const char *e = fm_last_error();
    return strstr(e, want) != NULL && (!part || strstr(e, part) != NULL);
}

/* Polls getFact until its answer contains `want` (or the wait ends). */
static int fact_becomes(fm_client *c, const char *key, const char *want)
{
    char req[256];
    snprintf(req, sizeof req, "{\"type\":\"rules.getFact\",\"key\":\"%s\"}", key);
    int64_t deadline = now_ms() + 20000 * slow();
    while (now_ms() < deadline) {
        char *r = NULL;
        if (rules(c, req, &r) == FM_OK && r && strstr(r, want)) {
            fm_string_free(r);
            return 1;
        }
        fm_string_free(r);
        sleep_ms(20);
    }
    return 0;
}

CORE_TEST(rules_events_facts_and_rules)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_rules_subscription *sub = NULL;
    REQUIRE_OK(fm_rules_subscribe(c, "user.*", &sub));
    char *r = NULL;
    REQUIRE_OK(rules(c, "{\"type\":\"rules.emit\",\"topic\":\"order.created\",\"data\":{\"n\":1}}", NULL));
    REQUIRE_OK(rules(c, "{\"type\":\"rules.emit\",\"topic\":\"user.created\",\"data\":{\"userId\":\"123\"},"
                        "\"correlationId\":\"corr-1\"}", &r));
    CHECK_MSG(r && strstr(r, "\"topic\":\"user.created\"") && strstr(r, "\"correlationId\":\"corr-1\"")
                  && strstr(r, "\"timestamp\":") && strstr(r, "\"id\":"), "%s", r);
    fm_string_free(r);
    r = NULL;
    REQUIRE_OK(fm_rules_subscription_next(sub, 20000 * slow(), &r));
    CHECK_MSG(r && strstr(r, "\"topic\":\"user.created\"") && strstr(r, "\"event\":{") && strstr(r, "\"userId\":\"123\""),
              "delivered %s", r ? r : "(none)");
    fm_string_free(r);
    r = (char *)0x1;
    CHECK_OK(fm_rules_subscription_next(sub, 50, &r)); /* nothing more: timeout */
    CHECK(r == NULL);

    /* Facts. */
    CHECK_OK(rules(c, "{\"type\":\"rules.setFact\",\"key\":\"user:1:status\",\"value\":\"active\"}", NULL));
    REQUIRE_OK(rules(c, "{\"type\":\"rules.getFact\",\"key\":\"user:1:status\"}", &r));
    CHECK(r && strcmp(r, "\"active\"") == 0);
    fm_string_free(r);
    REQUIRE_OK(rules(c, "{\"type\":\"rules.queryFacts\",\"pattern\":\"user:*:status\"}", &r));
    CHECK(r && strstr(r, "\"key\":\"user:1:status\""));
    fm_string_free(r);
    REQUIRE_OK(rules(c, "{\"type\":\"rules.deleteFact\",\"key\":\"user:1:status\"}", &r));
    CHECK(r && strcmp(r, "true") == 0);
    fm_string_free(r);

    /* A rule fires on a matching event. */
    REQUIRE_OK(rules(c, "{\"type\":\"rules.registerRule\",\"rule\":{\"id\":\"greet\","
                        "\"when\":{\"topic\":\"user.created\",\"data\":{\"userId\":{\"$exists\":true}}},"
                        "\"then\":[{\"type\":\"setFact\",\"key\":\"greeted:${data.userId}\",\"value\":true},"
                        "{\"type\":\"emit\",\"topic\":\"user.greeted\",\"data\":{\"u\":\"${data.userId}\"}}]}}", &r));
    CHECK(r && strstr(r, "\"version\":1") && strstr(r, "\"enabled\":true"));
    fm_string_free(r);
    CHECK_OK(rules(c, "{\"type\":\"rules.emit\",\"topic\":\"user.created\",\"data\":{\"userId\":\"7\"}}", NULL));
    CHECK(fact_becomes(c, "greeted:7", "true"));
    /* The subscription sees the client's event and the rule's. */
    int saw_created = 0, saw_greeted = 0;
    for (int i = 0; i < 2; i++) {
        r = NULL;
        if (fm_rules_subscription_next(sub, 20000 * slow(), &r) == FM_OK && r) {
            saw_created |= strstr(r, "\"topic\":\"user.created\"") != NULL;
            saw_greeted |= strstr(r, "\"topic\":\"user.greeted\"") != NULL && strstr(r, "\"causationId\":") != NULL;
        }
        fm_string_free(r);
    }
    CHECK(saw_created && saw_greeted);
    REQUIRE_OK(rules(c, "{\"type\":\"rules.stats\"}", &r));
    CHECK_MSG(r && strstr(r, "\"rulesCount\":1") && strstr(r, "\"eventsProcessed\":"), "%s", r);
    fm_string_free(r);
    CHECK_OK(rules(c, "{\"type\":\"rules.disableRule\",\"id\":\"greet\"}", NULL));
    REQUIRE_OK(rules(c, "{\"type\":\"rules.getRules\"}", &r));
    CHECK(r && strstr(r, "\"enabled\":false"));
    fm_string_free(r);
    CHECK_OK(rules(c, "{\"type\":\"rules.unregisterRule\",\"id\":\"greet\"}", NULL));
    CHECK_ST(rules(c, "{\"type\":\"rules.unregisterRule\",\"id\":\"greet\"}", NULL), FM_ERR_NOT_FOUND);
    CHECK(last_error_has("NOT_FOUND", "greet"));

    CHECK_OK(fm_rules_unsubscribe(sub));
    CHECK_ST(fm_rules_unsubscribe(sub), FM_ERR_CLOSED);
    CHECK_ST(fm_rules_subscription_next(sub, 0, &r), FM_ERR_CLOSED);
    CHECK_OK(fm_rules_unsubscribe(NULL));
    /* A subscription outliving its client answers CLOSED, then frees. */
    REQUIRE_OK(fm_rules_subscribe(c, ">", &sub));
    fm_client_close(c);
    r = NULL;
    CHECK_ST(fm_rules_subscription_next(sub, 0, &r), FM_ERR_CLOSED);
    CHECK(r == NULL);
    CHECK_OK(fm_rules_unsubscribe(sub));
}

CORE_TEST(rules_bad_input)
{
    fm_client *c = test_client();
    REQUIRE(c);
    char *r = NULL;
    const char *bad = "{\"id\":\"x\",\"when\":{\"topic\":\"a..b\"},\"then\":{\"type\":\"shout\"}}";
    char req[512];
    snprintf(req, sizeof req, "{\"type\":\"rules.validateRule\",\"rule\":%s}", bad);
    REQUIRE_OK(rules(c, req, &r));
    CHECK_MSG(r && strstr(r, "\"valid\":false") && strstr(r, "empty segment") && strstr(r, "unknown action type"),
              "%s", r);
    fm_string_free(r);
    snprintf(req, sizeof req, "{\"type\":\"rules.registerRule\",\"rule\":%s}", bad);
    CHECK_ST(rules(c, req, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("VALIDATION_ERROR", "\"details\":["));
    CHECK_ST(rules(c, "{\"type\":\"rules.frobnicate\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("INVALID_ARGUMENT", "frobnicate"));
    CHECK_ST(rules(c, "{\"type\":\"rules.emit\",\"topic\":\"a.*\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(rules(c, "{not json", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(rules(c, NULL, NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_rules_call(c, "{\"type\":\"rules.stats\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(rules(NULL, "{\"type\":\"rules.stats\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    fm_rules_subscription *sub = (fm_rules_subscription *)0x1;
    CHECK_ST(fm_rules_subscribe(c, "a.>.b", &sub), FM_ERR_INVALID_ARGUMENT);
    CHECK(sub == NULL);
    CHECK_ST(fm_rules_subscribe(c, NULL, &sub), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_rules_subscribe(c, "a", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_rules_subscription_next(NULL, 0, &r), FM_ERR_INVALID_ARGUMENT);

    CHECK_ST(procs(c, "{\"type\":\"procedures.call\",\"name\":\"ghost\"}", NULL), FM_ERR_NOT_FOUND);
    CHECK(last_error_has("NOT_FOUND", "ghost"));
    CHECK_ST(procs(c, "{\"type\":\"procedures.register\",\"procedure\":{\"name\":\"p\",\"steps\":[{\"op\":\"boom\"}]}}",
                   NULL),
             FM_ERR_INVALID_ARGUMENT);
    CHECK(last_error_has("VALIDATION_ERROR", "unknown op"));
    fm_client_close(c);
    CHECK_ST(rules(c, "{\"type\":\"rules.stats\"}", NULL), FM_ERR_CLOSED);
    CHECK_ST(procs(c, "{\"type\":\"procedures.list\"}", NULL), FM_ERR_CLOSED);
}

CORE_TEST(rules_procedures_call_atomically)
{
    fm_client *c = test_client();
    REQUIRE(c);
    char *r = NULL;
    CHECK_OK(call_with(fm_store_call, c, "{\"type\":\"store.insert\",\"bucket\":\"orders\",\"data\":{\"id\":\"o1\",\"total\":42}}", NULL));
    REQUIRE_OK(procs(c, "{\"type\":\"procedures.register\",\"procedure\":{\"name\":\"close\",\"steps\":["
                        "{\"op\":\"get\",\"bucket\":\"orders\",\"key\":\"${params.id}\",\"as\":\"order\"},"
                        "{\"op\":\"update\",\"bucket\":\"orders\",\"key\":\"${params.id}\",\"data\":{\"closed\":true}},"
                        "{\"op\":\"setFact\",\"key\":\"total:${params.id}\",\"value\":\"${order.total}\"},"
                        "{\"op\":\"emit\",\"topic\":\"order.closed\",\"data\":{\"id\":\"${params.id}\"}}]}}", NULL));
    REQUIRE_OK(procs(c, "{\"type\":\"procedures.call\",\"name\":\"close\",\"params\":{\"id\":\"o1\"}}", &r));
    CHECK_MSG(r && strstr(r, "{\"results\":[") && strstr(r, "\"closed\":true") && strstr(r, "\"topic\":\"order.closed\""),
              "%s", r);
    fm_string_free(r);
    CHECK(fact_becomes(c, "total:o1", "42"));
    /* A failing step writes nothing. */
    CHECK_ST(procs(c, "{\"type\":\"procedures.call\",\"name\":\"close\",\"params\":{\"id\":\"nope\"}}", NULL),
             FM_ERR_NOT_FOUND);
    CHECK(last_error_has("NOT_FOUND", "step 1 (update)"));
    REQUIRE_OK(rules(c, "{\"type\":\"rules.getFact\",\"key\":\"total:nope\"}", &r));
    CHECK(r && strcmp(r, "null") == 0);
    fm_string_free(r);
    REQUIRE_OK(procs(c, "{\"type\":\"procedures.list\"}", &r));
    CHECK(r && strstr(r, "\"name\":\"close\""));
    fm_string_free(r);
    CHECK_OK(procs(c, "{\"type\":\"procedures.unregister\",\"name\":\"close\"}", NULL));
    REQUIRE_OK(procs(c, "{\"type\":\"procedures.get\",\"name\":\"close\"}", &r));
    CHECK(r && strcmp(r, "null") == 0);
    fm_string_free(r);
    fm_client_close(c);
}
