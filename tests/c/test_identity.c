/* test_identity.c - identity through the C ABI (fm_identity_call,
 * fm_client_set_token, the identity_* connect options) against a broker
 * started here with --identity (a KILL_TEST: it needs FM_TEST_FLOWMESH and
 * runs its own broker). Logins, a user with and without a role, a session
 * handed to another client, logout, and bad input. */
#include "harness.h"
#include "broker.h"

#include <signal.h>
#include <unistd.h>

#define SECRET "the-admin-secret"

static fm_client *connect_with(const char *url, const char *user, const char *password)
{
    fm_options *o = fm_options_new();
    fm_client *c = NULL;
    fm_options_set(o, "tenant", "acme");
    if (user) {
        fm_options_set(o, "identity_user", user);
        fm_options_set(o, "identity_password", password);
    }
    fm_status st = fm_client_connect(url, o, &c);
    fm_options_free(o);
    return st == FM_OK ? c : NULL;
}

/* Runs one request; the answer (or NULL) goes to *answer (caller frees). */
static fm_status call(fm_client *c, const char *request, char **answer)
{
    char *out = NULL;
    fm_status st = fm_identity_call(c, request, &out);
    if (answer)
        *answer = out;
    else
        fm_string_free(out);
    return st;
}

/* The value of "field":"..." in a JSON answer, copied to buf. */
static int json_str(const char *json, const char *field, char *buf, size_t n)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":\"", field);
    const char *at = json ? strstr(json, key) : NULL;
    if (!at)
        return -1;
    at += strlen(key);
    const char *end = strchr(at, '"');
    if (!end || (size_t)(end - at) >= n)
        return -1;
    memcpy(buf, at, (size_t)(end - at));
    buf[end - at] = '\0';
    return 0;
}

KILL_TEST(identity_through_the_c_abi)
{
    char dir[] = "/tmp/flowmesh-identity-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char log[256];
    snprintf(log, sizeof log, "%s/broker.log", dir);
    const char *extra[] = {"--identity", "--admin-secret", SECRET, "--admin-tenant", "acme",
                           "--password-hash-memory-kib", "8", "--password-hash-iterations", "1", NULL};
    struct broker b = {0};
    REQUIRE(broker_start_args(&b, "mem://", log, extra) == 0);

    fm_client *admin = connect_with(b.url, NULL, NULL);
    fm_client *alice = NULL, *other = NULL;
    char *answer = NULL;
    if (!admin) {
        harness_fail(__FILE__, __LINE__, "connect: %s", fm_last_error());
        goto out;
    }
    /* Before a login nothing identity-managed is allowed. */
    CHECK_ST(call(admin, "{\"type\":\"identity.whoami\"}", NULL), FM_ERR_UNAUTHORIZED);
    CHECK_ST(call(admin, "{\"type\":\"identity.login_with_secret\",\"secret\":\"nope-nope\"}", NULL),
             FM_ERR_UNAUTHORIZED);
    CHECK_OK(call(admin, "{\"type\":\"identity.login_with_secret\",\"secret\":\"" SECRET "\"}", &answer));
    CHECK(answer && strstr(answer, "\"userId\":\"admin\"") && strstr(answer, "\"token\":\"fms_"));
    fm_string_free(answer);
    CHECK_OK(call(admin,
                  "{\"type\":\"identity.create_role\",\"name\":\"writer\",\"permissions\":[\"kv_read\",\"kv_write\"]}",
                  NULL));
    CHECK_OK(call(admin, "{\"type\":\"identity.create_user\",\"username\":\"alice\",\"password\":\"alice-pass\"}",
                  &answer));
    char alice_id[64] = "";
    CHECK(json_str(answer, "id", alice_id, sizeof alice_id) == 0);
    fm_string_free(answer);

    /* Wrong password, unknown user: the same refusal. */
    CHECK(connect_with(b.url, "alice", "wrong-pass") == NULL);
    char wrong[512];
    snprintf(wrong, sizeof wrong, "%s", fm_last_error());
    CHECK(connect_with(b.url, "nobody", "wrong-pass") == NULL);
    CHECK(strcmp(wrong, fm_last_error()) == 0);

    /* alice logs in by connect options; without the role she may not write. */
    alice = connect_with(b.url, "alice", "alice-pass");
    if (!alice) {
        harness_fail(__FILE__, __LINE__, "connect as alice: %s", fm_last_error());
        goto out;
    }
    CHECK_ST(fm_kv_set(alice, "cfg", "k", (const uint8_t *)"v", 1, 0, NULL), FM_ERR_UNAUTHORIZED);
    char req[256];
    snprintf(req, sizeof req, "{\"type\":\"identity.assign_role\",\"userId\":\"%s\",\"roleName\":\"writer\"}",
             alice_id);
    CHECK_OK(call(admin, req, NULL));
    CHECK_OK(fm_kv_set(alice, "cfg", "k", (const uint8_t *)"v", 1, 0, NULL));
    CHECK_ST(call(alice, "{\"type\":\"identity.list_users\"}", NULL), FM_ERR_UNAUTHORIZED);

    /* A session handed to another client with fm_client_set_token. */
    CHECK_OK(call(alice, "{\"type\":\"identity.login\",\"username\":\"alice\",\"password\":\"alice-pass\"}",
                  &answer));
    char token[128] = "";
    CHECK(json_str(answer, "token", token, sizeof token) == 0);
    fm_string_free(answer);
    other = connect_with(b.url, NULL, NULL);
    if (other) {
        fm_buf *v = NULL;
        CHECK_ST(fm_kv_get(other, "cfg", "k", &v), FM_ERR_UNAUTHORIZED);
        CHECK_OK(fm_client_set_token(other, token));
        CHECK_OK(fm_kv_get(other, "cfg", "k", &v));
        fm_buf_free(v);
        CHECK_OK(call(other, "{\"type\":\"auth.whoami\"}", &answer));
        CHECK(answer && strstr(answer, alice_id));
        fm_string_free(answer);
        CHECK_OK(fm_client_set_token(other, NULL));
        CHECK_ST(fm_kv_get(other, "cfg", "k", &v), FM_ERR_UNAUTHORIZED);
        CHECK_ST(fm_client_set_token(other, ""), FM_ERR_INVALID_ARGUMENT);
    }
    /* Logout ends the session: the client's next call is refused. */
    CHECK_OK(call(alice, "{\"type\":\"identity.logout\"}", &answer));
    CHECK(answer && strcmp(answer, "null") == 0);
    fm_string_free(answer);
    CHECK_ST(call(alice, "{\"type\":\"identity.whoami\"}", NULL), FM_ERR_UNAUTHORIZED);

    /* Bad input. */
    CHECK_ST(fm_identity_call(admin, NULL, &answer), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_identity_call(admin, "{\"type\":\"identity.whoami\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(admin, "not json", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(admin, "[1,2]", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(admin, "{\"type\":\"identity.fly\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(admin, "{\"type\":\"identity.get_user\"}", NULL), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(call(admin, "{\"type\":\"identity.get_user\",\"userId\":\"u_none\"}", NULL), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_identity_call(NULL, "{}", &answer), FM_ERR_INVALID_ARGUMENT);

out:
    if (other)
        fm_client_close(other);
    if (alice)
        fm_client_close(alice);
    if (admin)
        fm_client_close(admin);
    broker_stop(&b, SIGTERM);
    rm_tree(dir);
}

TEST(identity_needs_a_broker_with_identity)
{
    fm_client *c = NULL;
    REQUIRE(fm_client_connect("mem://", NULL, &c) == FM_OK);
    char *answer = NULL;
    CHECK_ST(fm_identity_call(c, "{\"type\":\"identity.whoami\"}", &answer), FM_ERR_UNAVAILABLE);
    CHECK(answer == NULL);
    CHECK_ST(fm_client_set_token(c, "x"), FM_ERR_UNAVAILABLE);
    fm_client_close(c);
    fm_options *o = fm_options_new();
    fm_options_set(o, "identity_user", "alice");
    CHECK_ST(fm_client_connect("mem://", o, &c), FM_ERR_INVALID_ARGUMENT);
    fm_options_free(o);
}
