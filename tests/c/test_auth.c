/* test_auth.c - the authorization matrix through the C ABI against a real
 * broker started here with --access-file (a KILL_TEST: it needs
 * FM_TEST_FLOWMESH and runs its own broker). For each operation and each
 * caller (no token, wrong token, a token of another tenant, a read-only
 * grant, a full grant) the status must be exactly the expected one; then
 * nothing may have been written across tenants and no refusal may name the
 * other tenant's resources. */
#include "harness.h"
#include "broker.h"

#include <signal.h>
#include <unistd.h>

#define NS "matrix"

/* SHA-256 hex of a token, as `flowmesh token hash` prints it. */
static int token_hash(const char *bin, const char *token, char out[65])
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' token hash '%s'", bin, token);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, 64, p);
    out[n] = '\0';
    int rc = pclose(p);
    return (n == 64 && rc == 0) ? 0 : -1;
}

/* Starts `flowmesh serve --access-file FILE` on a free port (bounded wait). */
static int start_auth_broker(struct broker *b, const char *access, const char *log)
{
    const char *extra[] = {"--access-file", access, NULL};
    return broker_start_args(b, "mem://", log, extra);
}

static fm_client *connect_as(const char *url, const char *tenant, const char *token)
{
    fm_options *o = fm_options_new();
    fm_client *c = NULL;
    fm_options_set(o, "tenant", tenant);
    fm_options_set(o, "namespace", NS);
    if (token)
        fm_options_set(o, "token", token);
    fm_status st = fm_client_connect(url, o, &c);
    fm_options_free(o);
    if (st != FM_OK)
        harness_fail(__FILE__, __LINE__, "connect as %s: %s (%s)", token ? token : "(none)",
                     fm_status_str(st), fm_last_error());
    return c;
}

/* ---- the operations ------------------------------------------------------ */

static fm_status op_publish(fm_client *c)
{
    fm_msg m = text_msg("matrix");
    return fm_publish(c, "events", &m, NULL);
}

static fm_status op_read(fm_client *c)
{
    fm_messages *out = NULL;
    fm_status st = fm_read(c, "events", 0, 0, 10, &out);
    fm_messages_free(out);
    return st;
}

static fm_status op_subscribe(fm_client *c)
{
    fm_options *o = fm_options_new();
    fm_options_set(o, "start", "earliest");
    fm_subscription *sub = NULL;
    fm_status st = fm_subscribe_pull(c, "events", o, &sub);
    fm_options_free(o);
    if (sub)
        fm_unsubscribe(sub);
    return st;
}

static fm_status op_commit(fm_client *c) { return fm_commit_offset(c, "events", "workers", 0, 0); }

static fm_status op_create(fm_client *c)
{
    /* Non-default settings: an admin action (defaults come with publish). */
    fm_options *o = fm_options_new();
    fm_options_set(o, "partitions", "2");
    fm_status st = fm_stream_create(c, "created", o);
    fm_options_free(o);
    return st;
}

static fm_status op_enqueue(fm_client *c)
{
    fm_msg m = text_msg("job");
    return fm_queue_enqueue(c, "jobs", &m, 0, 0, NULL);
}

static fm_status op_reserve(fm_client *c)
{
    fm_job *job = NULL;
    fm_status st = fm_queue_reserve(c, "jobs", 30000, 0, &job);
    if (job) {
        fm_queue_ack(c, "jobs", fm_job_id(job));
        fm_job_free(job);
    }
    return st;
}

static fm_status op_stats(fm_client *c)
{
    fm_queue_stats s;
    return fm_queue_get_stats(c, "jobs", &s);
}

static fm_status op_retry(fm_client *c) { return fm_queue_set_retry_policy(c, "jobs", 3, 10, 100, 2.0); }

static fm_status op_replay(fm_client *c)
{
    uint64_t n = 0;
    return fm_queue_dlq_replay_all(c, "jobs", NULL, NULL, &n);
}

static fm_status op_kv_get(fm_client *c)
{
    fm_buf *b = NULL;
    fm_status st = fm_kv_get(c, "cfg", "k", &b);
    fm_buf_free(b);
    return st;
}

static fm_status op_kv_set(fm_client *c) { return fm_kv_set(c, "cfg", "k", (const uint8_t *)"v", 1, 0, NULL); }

static void on_kv(void *ud, fm_kv_op op, const char *k, const uint8_t *v, size_t n, uint64_t r)
{
    (void)ud; (void)op; (void)k; (void)v; (void)n; (void)r;
}

static fm_status op_kv_watch(fm_client *c)
{
    fm_subscription *sub = NULL;
    fm_status st = fm_kv_watch(c, "cfg", "", on_kv, NULL, &sub);
    if (sub)
        fm_unsubscribe(sub);
    return st;
}

struct op {
    const char *name;
    fm_status (*fn)(fm_client *);
    int read_only_ok; /* allowed with the read/subscribe/kv_read grant */
};

static const struct op OPS[] = {
    {"publish", op_publish, 0},         {"read", op_read, 1},
    {"subscribe", op_subscribe, 1},     {"commit_offset", op_commit, 1},
    {"create_stream", op_create, 0},    {"queue_enqueue", op_enqueue, 0},
    {"queue_reserve", op_reserve, 0},   {"queue_stats", op_stats, 1},
    {"set_retry_policy", op_retry, 0},  {"dlq_replay_all", op_replay, 0},
    {"kv_get", op_kv_get, 1},           {"kv_set", op_kv_set, 0},
    {"kv_watch", op_kv_watch, 1},
};
#define N_OPS (sizeof OPS / sizeof OPS[0])

enum who { NO_TOKEN, WRONG_TOKEN, OTHER_TENANT, READ_ONLY, FULL, N_WHO };
static const char *WHO[] = {"no token", "wrong token", "other tenant", "read-only", "full"};

KILL_TEST(auth_matrix_through_the_c_abi)
{
    const char *bin = getenv("FM_TEST_FLOWMESH");
    char dir[] = "/tmp/flowmesh-auth-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char access[256], log[256];
    snprintf(access, sizeof access, "%s/access.json", dir);
    snprintf(log, sizeof log, "%s/broker.log", dir);
    char h_full[65], h_ro[65], h_other[65];
    REQUIRE(token_hash(bin, "full-secret", h_full) == 0);
    REQUIRE(token_hash(bin, "ro-secret", h_ro) == 0);
    REQUIRE(token_hash(bin, "globex-secret", h_other) == 0);
    FILE *f = fopen(access, "w");
    REQUIRE(f != NULL);
    fprintf(f,
            "{\"tokens\":[\n"
            " {\"id\":\"acme-full\",\"sha256\":\"%s\",\"tenant\":\"acme\",\"grants\":[{\"namespace\":\"*\",\"ops\":[\"*\"]}]},\n"
            " {\"id\":\"acme-ro\",\"sha256\":\"%s\",\"tenant\":\"acme\",\"grants\":[{\"resource\":\"acme/" NS
            "/*\",\"ops\":[\"read\",\"subscribe\",\"kv_read\"]}]},\n"
            " {\"id\":\"globex-full\",\"sha256\":\"%s\",\"tenant\":\"globex\",\"grants\":[{\"namespace\":\"*\",\"ops\":[\"*\"]}]}\n"
            "]}\n",
            h_full, h_ro, h_other);
    fclose(f);

    struct broker b = {0};
    REQUIRE(start_auth_broker(&b, access, log) == 0);

    /* Every caller names acme's resources (the other tenant's token too). */
    fm_client *c[N_WHO];
    c[NO_TOKEN] = connect_as(b.url, "acme", NULL);
    c[WRONG_TOKEN] = connect_as(b.url, "acme", "not-a-token");
    c[OTHER_TENANT] = connect_as(b.url, "acme", "globex-secret");
    c[READ_ONLY] = connect_as(b.url, "acme", "ro-secret");
    c[FULL] = connect_as(b.url, "acme", "full-secret");
    for (int w = 0; w < N_WHO; w++)
        if (!c[w])
            goto out;

    /* What the allowed calls find: a stream, a job, a key. */
    if (op_publish(c[FULL]) != FM_OK || op_enqueue(c[FULL]) != FM_OK || op_kv_set(c[FULL]) != FM_OK) {
        harness_fail(__FILE__, __LINE__, "setup as the full token: %s", fm_last_error());
        goto out;
    }

    int cells = 0;
    for (int w = 0; w < N_WHO; w++) {
        for (size_t i = 0; i < N_OPS; i++) {
            fm_status want = FM_ERR_UNAUTHORIZED;
            if (w == FULL || (w == READ_ONLY && OPS[i].read_only_ok))
                want = FM_OK;
            fm_status got = OPS[i].fn(c[w]);
            cells++;
            if (got != want)
                harness_fail(__FILE__, __LINE__, "%s x %s: expected %s, got %s (%s)", OPS[i].name,
                             WHO[w], fm_status_str(want), fm_status_str(got), fm_last_error());
            /* A refusal never names the resource of another tenant. */
            if (w == OTHER_TENANT && got == FM_ERR_UNAUTHORIZED) {
                CHECK(strstr(fm_last_error(), "acme/") == NULL);
                CHECK(strstr(fm_last_error(), "events") == NULL);
            }
        }
    }
    CHECK(cells == (int)(N_OPS * N_WHO));

    /* Existing and missing resources of another tenant: the same answer. */
    fm_messages *none = NULL;
    CHECK_ST(fm_read(c[OTHER_TENANT], "acme/" NS "/events", 0, 0, 1, &none), FM_ERR_UNAUTHORIZED);
    char first[512];
    snprintf(first, sizeof first, "%s", fm_last_error());
    CHECK_ST(fm_read(c[OTHER_TENANT], "acme/" NS "/no-such-stream", 0, 0, 1, &none), FM_ERR_UNAUTHORIZED);
    CHECK(strcmp(first, fm_last_error()) == 0);
    fm_messages_free(none);

    /* Zero cross-tenant writes: acme's stream holds exactly the full
     * client's two publishes (setup + matrix row), acme's key its value. */
    fm_messages *msgs = NULL;
    CHECK_OK(fm_read(c[FULL], "events", 0, 0, 100, &msgs));
    CHECK(msgs && fm_messages_len(msgs) == 2);
    fm_messages_free(msgs);
    fm_buf *v = NULL;
    CHECK_OK(fm_kv_get(c[FULL], "cfg", "k", &v));
    CHECK(v && bytes_eq(fm_buf_data(v, NULL), 1, "v"));
    fm_buf_free(v);
    /* And globex's own tenant got nothing from acme's callers. */
    fm_client *g = connect_as(b.url, "globex", "globex-secret");
    if (g) {
        fm_messages *gm = NULL;
        fm_status st = fm_read(g, "events", 0, 0, 100, &gm);
        CHECK(st == FM_ERR_NOT_FOUND || (st == FM_OK && fm_messages_len(gm) == 0));
        fm_messages_free(gm);
        fm_client_close(g);
    }

out:
    for (int w = 0; w < N_WHO; w++)
        fm_client_close(c[w]);
    broker_stop(&b, SIGTERM);
    rm_tree(dir);
}
