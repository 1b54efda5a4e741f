/* test_queues.c - enqueue/reserve/ack/nack, job accessors, priorities,
 * delays, visibility-timeout redelivery, retry policy, DLQ, batch receive. */
#include "harness.h"

static uint64_t enqueue_text(fm_client *c, const char *q, const char *body,
                             uint64_t delay_ms, int32_t prio)
{
    fm_msg m = text_msg(body);
    uint64_t id = 0;
    CHECK_OK(fm_queue_enqueue(c, q, &m, delay_ms, prio, &id));
    return id;
}

CORE_TEST(queue_enqueue_reserve_ack)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_header hs[2] = {{"tenant", "blue"}, {"kind", "email"}};
    fm_msg m = text_msg("job-body");
    m.headers = hs;
    m.headers_len = 2;
    uint64_t id = 0;
    REQUIRE_OK(fm_queue_enqueue(c, "jobs", &m, 0, 5, &id));
    CHECK(id == 1); /* job ids start at 1 per queue */
    CHECK(enqueue_text(c, "jobs", "second", 0, 0) == 2);
    CHECK(enqueue_text(c, "other", "first-of-other", 0, 0) == 1);
    CHECK_OK(fm_queue_enqueue(c, "jobs", &m, 0, 0, NULL)); /* job_id_out may be NULL */

    fm_queue_stats st;
    REQUIRE_OK(fm_queue_get_stats(c, "jobs", &st));
    CHECK(st.pending == 3 && st.in_flight == 0 && st.delayed == 0 && st.dead == 0);

    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "jobs", 30000, 1000, &job));
    REQUIRE(job != NULL);
    CHECK(fm_job_id(job) == 1);
    CHECK(fm_job_attempt(job) == 1);
    CHECK(fm_job_priority(job) == 5);
    size_t len = 0;
    const uint8_t *p = fm_job_payload(job, &len);
    CHECK(bytes_eq(p, len, "job-body"));
    CHECK(fm_job_payload(job, NULL) == p);
    CHECK(fm_job_header(job, "kind") && strcmp(fm_job_header(job, "kind"), "email") == 0);
    CHECK(fm_job_header(job, "tenant") && strcmp(fm_job_header(job, "tenant"), "blue") == 0);
    CHECK(fm_job_header(job, "missing") == NULL);
    CHECK(fm_job_header(job, NULL) == NULL);
    CHECK(fm_job_header(job, "bad\xff") == NULL);
    REQUIRE(fm_job_headers_len(job) == 2);
    const fm_header *h = fm_job_headers(job);
    REQUIRE(h != NULL);
    CHECK(strcmp(h[0].key, "tenant") == 0 && strcmp(h[0].value, "blue") == 0);
    CHECK(strcmp(h[1].key, "kind") == 0 && strcmp(h[1].value, "email") == 0);

    REQUIRE_OK(fm_queue_get_stats(c, "jobs", &st));
    CHECK(st.pending == 2 && st.in_flight == 1);
    CHECK_OK(fm_queue_ack(c, "jobs", fm_job_id(job)));
    CHECK_ST(fm_queue_ack(c, "jobs", fm_job_id(job)), FM_ERR_NOT_FOUND); /* twice */
    fm_job_free(job);
    REQUIRE_OK(fm_queue_get_stats(c, "jobs", &st));
    CHECK(st.pending == 2 && st.in_flight == 0);
    fm_client_close(c);
}

CORE_TEST(queue_ack_nack_errors)
{
    fm_client *c = test_client();
    REQUIRE(c);
    uint64_t id = enqueue_text(c, "q", "x", 0, 0);
    CHECK_ST(fm_queue_ack(c, "q", 999), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_queue_nack(c, "q", 999, 0), FM_ERR_NOT_FOUND);
    /* nack of a job that is pending, not reserved */
    CHECK_ST(fm_queue_nack(c, "q", id, 0), FM_ERR_CONFLICT);
    CHECK(strlen(fm_last_error()) > 0);
    /* nack of a delayed job */
    uint64_t later = enqueue_text(c, "q", "later", 60000, 0);
    CHECK_ST(fm_queue_nack(c, "q", later, 0), FM_ERR_CONFLICT);
    /* the acked job is gone */
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "q", 30000, 1000, &job));
    REQUIRE(job);
    CHECK_OK(fm_queue_ack(c, "q", fm_job_id(job)));
    CHECK_ST(fm_queue_nack(c, "q", fm_job_id(job), 0), FM_ERR_NOT_FOUND);
    fm_job_free(job);
    /* queue that never existed: stats are zero, ack not found */
    fm_queue_stats st;
    memset(&st, 0xff, sizeof st);
    CHECK_OK(fm_queue_get_stats(c, "fresh", &st));
    CHECK(st.pending == 0 && st.in_flight == 0 && st.delayed == 0 && st.dead == 0);
    CHECK_ST(fm_queue_ack(c, "fresh", 1), FM_ERR_NOT_FOUND);
    fm_client_close(c);
}

CORE_TEST(queue_reserve_timeout_returns_null)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_job *job = (fm_job *)0x1;
    int64_t t0 = now_ms();
    CHECK_OK(fm_queue_reserve(c, "empty", 1000, 0, &job));
    CHECK(job == NULL);
    job = (fm_job *)0x1;
    CHECK_OK(fm_queue_reserve(c, "empty", 1000, 150, &job));
    int64_t dt = now_ms() - t0;
    CHECK(job == NULL);
    CHECK_MSG(dt >= 140, "reserve with wait 150 ms returned after %lld ms", (long long)dt);
    CHECK_MSG(dt < 5000 * slow(), "reserve with wait 150 ms took %lld ms", (long long)dt);
    fm_client_close(c);
}

struct late_enqueue {
    fm_client *c;
    int status;
};

static void *enqueue_later(void *p)
{
    struct late_enqueue *a = p;
    sleep_ms(100);
    fm_msg m = text_msg("late");
    a->status = fm_queue_enqueue(a->c, "longpoll", &m, 0, 0, NULL);
    return NULL;
}

CORE_TEST(queue_reserve_long_poll_wakes_on_enqueue)
{
    fm_client *c = test_client();
    REQUIRE(c);
    struct late_enqueue a = {c, -1};
    pthread_t t;
    pthread_create(&t, NULL, enqueue_later, &a);
    fm_job *job = NULL;
    int64_t t0 = now_ms();
    CHECK_OK(fm_queue_reserve(c, "longpoll", 30000, 20000 * slow(), &job));
    int64_t dt = now_ms() - t0;
    pthread_join(t, NULL);
    CHECK_ST(a.status, FM_OK);
    REQUIRE(job != NULL);
    CHECK_MSG(dt < 10000 * slow(), "long poll took %lld ms", (long long)dt);
    size_t len;
    const uint8_t *pl = fm_job_payload(job, &len);
    CHECK(bytes_eq(pl, len, "late"));
    fm_job_free(job);
    fm_client_close(c);
}

CORE_TEST(queue_priority_then_fifo)
{
    fm_client *c = test_client();
    REQUIRE(c);
    enqueue_text(c, "prio", "low-1", 0, -1);
    enqueue_text(c, "prio", "mid-1", 0, 0);
    enqueue_text(c, "prio", "high-1", 0, 10);
    enqueue_text(c, "prio", "mid-2", 0, 0);
    enqueue_text(c, "prio", "high-2", 0, 10);
    const char *want[] = {"high-1", "high-2", "mid-1", "mid-2", "low-1"};
    for (int i = 0; i < 5; i++) {
        fm_job *job = NULL;
        REQUIRE_OK(fm_queue_reserve(c, "prio", 30000, 1000, &job));
        REQUIRE(job);
        size_t len;
        const uint8_t *p = fm_job_payload(job, &len);
        CHECK_MSG(bytes_eq(p, len, want[i]), "reserve %d got %.*s, expected %s", i,
                  (int)len, (const char *)p, want[i]);
        CHECK_OK(fm_queue_ack(c, "prio", fm_job_id(job)));
        fm_job_free(job);
    }
    fm_client_close(c);
}

CORE_TEST(queue_delay)
{
    fm_client *c = test_client();
    REQUIRE(c);
    int64_t t0 = now_ms();
    enqueue_text(c, "delayed", "soon", 300, 0);
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "delayed", &st));
    CHECK(st.delayed == 1 && st.pending == 0);
    fm_job *job = NULL;
    CHECK_OK(fm_queue_reserve(c, "delayed", 30000, 0, &job));
    CHECK(job == NULL);
    CHECK_OK(fm_queue_reserve(c, "delayed", 30000, 10000 * slow(), &job));
    REQUIRE(job);
    int64_t dt = now_ms() - t0;
    CHECK_MSG(dt >= 290, "delayed job reserved after %lld ms (< 300)", (long long)dt);
    CHECK_OK(fm_queue_ack(c, "delayed", fm_job_id(job)));
    fm_job_free(job);
    fm_client_close(c);
}

CORE_TEST(queue_visibility_timeout_redelivers_with_attempt_2)
{
    fm_client *c = test_client();
    REQUIRE(c);
    uint64_t id = enqueue_text(c, "vis", "work", 0, 0);
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "vis", 200, 1000, &job));
    REQUIRE(job);
    CHECK(fm_job_id(job) == id && fm_job_attempt(job) == 1);
    fm_job_free(job);
    /* not acked: visible again after ~200 ms, as attempt 2 */
    job = NULL;
    fm_job *none = NULL;
    CHECK_OK(fm_queue_reserve(c, "vis", 200, 0, &none));
    CHECK_MSG(none == NULL, "job delivered twice within its visibility timeout");
    fm_job_free(none);
    int64_t t0 = now_ms();
    REQUIRE_OK(fm_queue_reserve(c, "vis", 30000, 10000 * slow(), &job));
    if (!job) {
        harness_fail(__FILE__, __LINE__, "no redelivery after the visibility timeout");
        fm_client_close(c);
        return;
    }
    CHECK(fm_job_id(job) == id);
    CHECK_MSG(fm_job_attempt(job) == 2, "attempt %u, expected 2", fm_job_attempt(job));
    CHECK(now_ms() - t0 < 5000 * slow());
    /* the first reservation's ack window is gone; acking the new one works */
    CHECK_OK(fm_queue_ack(c, "vis", id));
    fm_job_free(job);
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "vis", &st));
    CHECK(st.pending == 0 && st.in_flight == 0 && st.delayed == 0);
    fm_client_close(c);
}

CORE_TEST(queue_retry_policy_roundtrip)
{
    fm_client *c = test_client();
    REQUIRE(c);
    fm_retry_policy p;
    memset(&p, 0xff, sizeof p);
    CHECK_OK(fm_queue_get_retry_policy(c, "rq", &p));
    CHECK(p.max_attempts == 0); /* default: retry forever */
    CHECK_OK(fm_queue_set_retry_policy(c, "rq", 5, 100, 2000, 3.0));
    CHECK_OK(fm_queue_get_retry_policy(c, "rq", &p));
    CHECK(p.max_attempts == 5 && p.initial_backoff_ms == 100 && p.max_backoff_ms == 2000 &&
          p.multiplier == 3.0);
    CHECK_ST(fm_queue_set_retry_policy(c, "rq", 5, 100, 2000, 0.99), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_queue_set_retry_policy(c, "rq", 5, 100, 2000, -1.0), FM_ERR_INVALID_ARGUMENT);
    CHECK_ST(fm_queue_set_retry_policy(c, "rq", 5, 100, 2000, 0.0 / 0.0), FM_ERR_INVALID_ARGUMENT);
    CHECK_OK(fm_queue_get_retry_policy(c, "rq", &p));
    CHECK(p.multiplier == 3.0); /* unchanged by the refused calls */
    fm_client_close(c);
}

CORE_TEST(queue_nack_backoff_and_delay)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(fm_queue_set_retry_policy(c, "nb", 0, 200, 1000, 2.0));
    uint64_t id = enqueue_text(c, "nb", "x", 0, 0);
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "nb", 30000, 1000, &job));
    REQUIRE(job);
    fm_job_free(job);
    int64_t t0 = now_ms();
    CHECK_OK(fm_queue_nack(c, "nb", id, 0)); /* policy backoff: 200 ms */
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "nb", &st));
    CHECK(st.delayed == 1 && st.in_flight == 0);
    job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "nb", 30000, 10000 * slow(), &job));
    REQUIRE(job);
    CHECK_MSG(now_ms() - t0 >= 190, "redelivered after %lld ms, backoff is 200",
              (long long)(now_ms() - t0));
    CHECK(fm_job_attempt(job) == 2);
    fm_job_free(job);
    /* explicit nack delay overrides the policy */
    t0 = now_ms();
    CHECK_OK(fm_queue_nack(c, "nb", id, 50));
    job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "nb", 30000, 10000 * slow(), &job));
    REQUIRE(job);
    CHECK(now_ms() - t0 >= 45);
    CHECK(fm_job_attempt(job) == 3);
    CHECK_OK(fm_queue_ack(c, "nb", id));
    fm_job_free(job);
    fm_client_close(c);
}

CORE_TEST(queue_dead_letter_after_max_attempts_and_replay)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(fm_queue_set_retry_policy(c, "dlq", 2, 0, 0, 1.0));
    fm_header h = {"source", "import"};
    fm_msg m = text_msg("poison");
    m.headers = &h;
    m.headers_len = 1;
    uint64_t id = 0;
    REQUIRE_OK(fm_queue_enqueue(c, "dlq", &m, 0, 0, &id));
    for (uint32_t attempt = 1; attempt <= 2; attempt++) {
        fm_job *job = NULL;
        REQUIRE_OK(fm_queue_reserve(c, "dlq", 30000, 5000 * slow(), &job));
        REQUIRE(job);
        CHECK(fm_job_attempt(job) == attempt);
        CHECK_OK(fm_queue_nack(c, "dlq", fm_job_id(job), 0));
        fm_job_free(job);
    }
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "dlq", &st));
    CHECK_MSG(st.dead == 1 && st.pending == 0 && st.in_flight == 0 && st.delayed == 0,
              "stats pending=%llu in_flight=%llu delayed=%llu dead=%llu",
              (unsigned long long)st.pending, (unsigned long long)st.in_flight,
              (unsigned long long)st.delayed, (unsigned long long)st.dead);
    fm_job *none = NULL;
    CHECK_OK(fm_queue_reserve(c, "dlq", 30000, 0, &none));
    CHECK(none == NULL);
    /* dead jobs cannot be acked or nacked */
    CHECK_ST(fm_queue_ack(c, "dlq", id), FM_ERR_NOT_FOUND);
    CHECK_ST(fm_queue_nack(c, "dlq", id, 0), FM_ERR_NOT_FOUND);

    fm_jobs *jobs = NULL;
    REQUIRE_OK(fm_queue_dlq_list(c, "dlq", 0, &jobs));
    REQUIRE(fm_jobs_len(jobs) == 1);
    const fm_job *dead = fm_jobs_get(jobs, 0);
    REQUIRE(dead);
    CHECK(fm_job_id(dead) == id);
    CHECK(fm_job_attempt(dead) == 2);
    CHECK(fm_job_header(dead, "source") && strcmp(fm_job_header(dead, "source"), "import") == 0);
    size_t len;
    const uint8_t *pl = fm_job_payload(dead, &len);
    CHECK(bytes_eq(pl, len, "poison"));
    CHECK(fm_jobs_get(jobs, 1) == NULL);
    fm_jobs_free(jobs);

    CHECK_ST(fm_queue_dlq_replay(c, "dlq", 999), FM_ERR_NOT_FOUND);
    CHECK_OK(fm_queue_dlq_replay(c, "dlq", id));
    CHECK_ST(fm_queue_dlq_replay(c, "dlq", id), FM_ERR_NOT_FOUND); /* no longer dead */
    CHECK_OK(fm_queue_get_stats(c, "dlq", &st));
    CHECK(st.dead == 0 && st.pending == 1);
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "dlq", 30000, 1000, &job));
    REQUIRE(job);
    CHECK(fm_job_id(job) == id);
    CHECK_MSG(fm_job_attempt(job) == 1, "replayed job attempt %u, expected 1 (reset)",
              fm_job_attempt(job));
    CHECK_OK(fm_queue_ack(c, "dlq", id));
    fm_job_free(job);
    fm_client_close(c);
}

/* A job whose visibility expires max_attempts times is dead-lettered too. */
CORE_TEST(queue_visibility_expiry_counts_towards_dlq)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(fm_queue_set_retry_policy(c, "vexp", 1, 0, 0, 1.0));
    uint64_t id = enqueue_text(c, "vexp", "slow", 0, 0);
    fm_job *job = NULL;
    REQUIRE_OK(fm_queue_reserve(c, "vexp", 100, 1000, &job));
    REQUIRE(job);
    fm_job_free(job);
    fm_queue_stats st = {0};
    int64_t deadline = now_ms() + 10000 * slow();
    while (now_ms() < deadline) {
        CHECK_OK(fm_queue_get_stats(c, "vexp", &st));
        if (st.dead == 1)
            break;
        sleep_ms(20);
    }
    CHECK_MSG(st.dead == 1, "expired job with max_attempts=1 not dead-lettered");
    CHECK_ST(fm_queue_ack(c, "vexp", id), FM_ERR_NOT_FOUND);
    fm_client_close(c);
}

CORE_TEST(queue_dlq_list_max_and_replay_all)
{
    fm_client *c = test_client();
    REQUIRE(c);
    CHECK_OK(fm_queue_set_retry_policy(c, "many", 1, 0, 0, 1.0));
    const char *colour[] = {"red", "blue", "red", "green", "red"};
    for (int i = 0; i < 5; i++) {
        fm_header h = {"colour", colour[i]};
        fm_msg m = text_msg("x");
        m.headers = &h;
        m.headers_len = 1;
        REQUIRE_OK(fm_queue_enqueue(c, "many", &m, 0, 0, NULL));
    }
    for (int i = 0; i < 5; i++) {
        fm_job *job = NULL;
        REQUIRE_OK(fm_queue_reserve(c, "many", 30000, 1000, &job));
        REQUIRE(job);
        CHECK_OK(fm_queue_nack(c, "many", fm_job_id(job), 0));
        fm_job_free(job);
    }
    fm_jobs *jobs = NULL;
    REQUIRE_OK(fm_queue_dlq_list(c, "many", 2, &jobs));
    CHECK(fm_jobs_len(jobs) == 2);
    /* oldest first */
    CHECK(fm_job_id(fm_jobs_get(jobs, 0)) == 1 && fm_job_id(fm_jobs_get(jobs, 1)) == 2);
    fm_jobs_free(jobs);
    REQUIRE_OK(fm_queue_dlq_list(c, "many", 0, &jobs));
    CHECK(fm_jobs_len(jobs) == 5);
    fm_jobs_free(jobs);

    uint64_t n = 0;
    CHECK_OK(fm_queue_dlq_replay_all(c, "many", "colour", "red", &n));
    CHECK(n == 3);
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "many", &st));
    CHECK(st.dead == 2 && st.pending == 3);
    CHECK_OK(fm_queue_dlq_replay_all(c, "many", "colour", "purple", &n));
    CHECK(n == 0);
    CHECK_OK(fm_queue_dlq_replay_all(c, "many", NULL, NULL, &n));
    CHECK(n == 2);
    CHECK_OK(fm_queue_dlq_replay_all(c, "many", NULL, NULL, NULL));
    CHECK_OK(fm_queue_get_stats(c, "many", &st));
    CHECK(st.dead == 0 && st.pending == 5);
    /* an empty DLQ lists as an empty (non-NULL) list */
    jobs = NULL;
    CHECK_OK(fm_queue_dlq_list(c, "many", 0, &jobs));
    CHECK(jobs != NULL && fm_jobs_len(jobs) == 0);
    fm_jobs_free(jobs);
    fm_client_close(c);
}

CORE_TEST(queue_receive_batch)
{
    fm_client *c = test_client();
    REQUIRE(c);
    for (int i = 0; i < 5; i++)
        enqueue_text(c, "batch", "b", 0, 0);
    fm_jobs *jobs = NULL;
    REQUIRE_OK(fm_queue_receive(c, "batch", 3, 30000, 1000, &jobs));
    REQUIRE(jobs);
    CHECK(fm_jobs_len(jobs) == 3);
    for (size_t i = 0; i < fm_jobs_len(jobs); i++) {
        const fm_job *j = fm_jobs_get(jobs, i);
        CHECK(fm_job_id(j) == i + 1 && fm_job_attempt(j) == 1);
        CHECK_OK(fm_queue_ack(c, "batch", fm_job_id(j)));
    }
    fm_jobs_free(jobs);
    REQUIRE_OK(fm_queue_receive(c, "batch", 10, 30000, 1000, &jobs));
    CHECK(fm_jobs_len(jobs) == 2);
    fm_jobs_free(jobs);
    /* empty: FM_OK with 0 jobs after the wait */
    jobs = NULL;
    int64_t t0 = now_ms();
    CHECK_OK(fm_queue_receive(c, "batch", 10, 30000, 100, &jobs));
    CHECK(jobs != NULL && fm_jobs_len(jobs) == 0);
    CHECK(now_ms() - t0 >= 90);
    fm_jobs_free(jobs);
    fm_queue_stats st;
    CHECK_OK(fm_queue_get_stats(c, "batch", &st));
    CHECK(st.in_flight == 2 && st.pending == 0);
    fm_client_close(c);
}

/* Competing workers on one queue: every job processed exactly once. */
struct qworker {
    fm_client *c;
    int done;
    int errors;
};

static void *qworker_run(void *p)
{
    struct qworker *w = p;
    for (;;) {
        fm_job *job = NULL;
        if (fm_queue_reserve(w->c, "compete", 30000, 200, &job) != FM_OK) {
            w->errors++;
            break;
        }
        if (!job)
            break;
        w->errors += fm_queue_ack(w->c, "compete", fm_job_id(job)) != FM_OK;
        w->done++;
        fm_job_free(job);
    }
    return NULL;
}

CORE_TEST(queue_competing_workers)
{
    fm_client *c = test_client();
    REQUIRE(c);
    enum { JOBS = 300, W = 3 };
    for (int i = 0; i < JOBS; i++)
        enqueue_text(c, "compete", "j", 0, 0);
    pthread_t t[W];
    struct qworker w[W];
    for (int i = 0; i < W; i++) {
        w[i] = (struct qworker){c, 0, 0};
        pthread_create(&t[i], NULL, qworker_run, &w[i]);
    }
    int total = 0;
    for (int i = 0; i < W; i++) {
        pthread_join(t[i], NULL);
        total += w[i].done;
        CHECK(w[i].errors == 0);
    }
    CHECK_MSG(total == JOBS, "workers processed %d of %d jobs", total, JOBS);
    fm_client_close(c);
}
