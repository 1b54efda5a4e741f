/*
 * queue_worker.c - a job queue with retries and a dead-letter queue.
 *
 *   usage: queue_worker [URL]     (default "mem://")
 *
 * A producer enqueues jobs; a worker thread reserves them, acks the ones it
 * can do and nacks the one it cannot. After max_attempts deliveries the
 * failing job lands in the dead-letter queue (DLQ), where it can be listed
 * and replayed. Reserved jobs that are neither acked nor nacked within the
 * visibility timeout are delivered again with attempt+1.
 *
 * Build against an installed library:
 *     cc queue_worker.c $(pkg-config --cflags --libs flowmesh) -o queue_worker
 */
#include <flowmesh.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                        \
    do {                                                                   \
        fm_status st_ = (call);                                            \
        if (st_ != FM_OK) {                                                \
            fprintf(stderr, "FAILED: %s -> %s (%s)\n", #call,              \
                    fm_status_str(st_), fm_last_error());                  \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

#define QUEUE "emails"

/* The worker: reserve with long-poll, process, ack or nack. It stops when
 * nothing arrives for 500 ms. A client may be used from any thread. */
static void *worker(void *arg)
{
    fm_client *c = arg;
    for (;;) {
        fm_job *job = NULL;
        CHECK(fm_queue_reserve(c, QUEUE, 10000 /* visibility */, 500 /* wait */, &job));
        if (job == NULL) /* FM_OK and no job: the queue stayed empty */
            break;
        size_t len;
        const char *body = (const char *)fm_job_payload(job, &len);
        const char *to = fm_job_header(job, "to"); /* NULL if absent */
        printf("job %llu attempt %u to=%s: %.*s\n",
               (unsigned long long)fm_job_id(job), fm_job_attempt(job),
               to ? to : "?", (int)len, body);
        if (to && strstr(to, "invalid")) {
            /* Give it back; 0 = use the retry policy's backoff. */
            CHECK(fm_queue_nack(c, QUEUE, fm_job_id(job), 0));
            printf("  nacked (bad address)\n");
        } else {
            CHECK(fm_queue_ack(c, QUEUE, fm_job_id(job)));
            printf("  sent, acked\n");
        }
        fm_job_free(job);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "mem://";
    fm_client *c = NULL;
    CHECK(fm_client_connect(url, NULL, &c));

    /* Two deliveries at most; retry after 10 ms, doubling, capped at 100 ms. */
    CHECK(fm_queue_set_retry_policy(c, QUEUE, 2, 10, 100, 2.0));

    const char *to[] = {"ann@example.com", "invalid-address", "bob@example.com"};
    for (int i = 0; i < 3; i++) {
        fm_header h = {"to", to[i]};
        const char *body = "welcome!";
        fm_msg m = {.payload = (const uint8_t *)body, .payload_len = strlen(body),
                    .headers = &h, .headers_len = 1};
        uint64_t id;
        CHECK(fm_queue_enqueue(c, QUEUE, &m, 0 /* delay */, 0 /* priority */, &id));
        printf("enqueued job %llu for %s\n", (unsigned long long)id, to[i]);
    }

    pthread_t t;
    pthread_create(&t, NULL, worker, c);
    pthread_join(t, NULL);

    fm_queue_stats s;
    CHECK(fm_queue_get_stats(c, QUEUE, &s));
    printf("stats: pending=%llu in_flight=%llu delayed=%llu dead=%llu\n",
           (unsigned long long)s.pending, (unsigned long long)s.in_flight,
           (unsigned long long)s.delayed, (unsigned long long)s.dead);

    /* Inspect the dead-letter queue (0 = list all) and replay its jobs. */
    fm_jobs *dead = NULL;
    CHECK(fm_queue_dlq_list(c, QUEUE, 0, &dead));
    for (size_t i = 0; i < fm_jobs_len(dead); i++) {
        const fm_job *j = fm_jobs_get(dead, i); /* borrowed: no fm_job_free */
        printf("dead job %llu after %u attempts (to=%s)\n",
               (unsigned long long)fm_job_id(j), fm_job_attempt(j),
               fm_job_header(j, "to"));
        CHECK(fm_queue_dlq_replay(c, QUEUE, fm_job_id(j)));
        printf("  replayed: it is pending again\n");
    }
    fm_jobs_free(dead);

    fm_client_close(c);
    return 0;
}
