/*
 * demo.c - a tour of flowmesh through its C ABI, one step per line.
 *
 *   usage: demo [URL]      URL defaults to "mem://" (in memory);
 *                          "file:///some/dir" keeps the data on disk.
 *
 * It publishes to a stream while a subscription callback prints what
 * arrives, runs one queue job through enqueue -> reserve -> ack, and
 * sets/gets a key-value entry. Every call's status is checked; the program
 * exits 1 on the first failure, 0 when everything worked.
 *
 * Build (from this directory):   make            (see Makefile)
 * Build against an installed library:
 *     cc demo.c $(pkg-config --cflags --libs flowmesh) -o demo
 */
#include <flowmesh.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Print the failing call, its status name and the library's detail, then exit. */
#define CHECK(call)                                                        \
    do {                                                                   \
        fm_status st_ = (call);                                            \
        if (st_ != FM_OK) {                                                \
            fprintf(stderr, "FAILED: %s -> %s (%s)\n", #call,              \
                    fm_status_str(st_), fm_last_error());                  \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

/* The subscription callback runs on a library thread, so the count it
 * shares with main() is guarded by a mutex and signalled with a condvar. */
struct inbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int received;
};

static void on_message(void *user_data, const fm_message *msg)
{
    struct inbox *in = user_data;
    /* msg and everything it points to are valid only during this call. */
    printf("  <- received on %s partition %u offset %llu: %.*s\n", msg->stream,
           msg->partition, (unsigned long long)msg->offset,
           (int)msg->payload_len, (const char *)msg->payload);
    pthread_mutex_lock(&in->mu);
    in->received++;
    pthread_cond_signal(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

/* Wait up to `seconds` for `want` messages; returns how many arrived. */
static int wait_for(struct inbox *in, int want, int seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += seconds;
    pthread_mutex_lock(&in->mu);
    while (in->received < want &&
           pthread_cond_timedwait(&in->cv, &in->mu, &deadline) == 0) {
    }
    int got = in->received;
    pthread_mutex_unlock(&in->mu);
    return got;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "mem://";
    printf("flowmesh %s, connecting to %s\n", fm_version(), url);

    /* 1. Connect. Options are string key/value; NULL means defaults. */
    fm_options *opts = fm_options_new();
    CHECK(fm_options_set(opts, "namespace", "demo"));
    fm_client *client = NULL;
    CHECK(fm_client_connect(url, opts, &client));
    fm_options_free(opts); /* connect copied it */
    CHECK(fm_client_health(client));
    printf("connected, engine healthy\n");

    /* 2. Subscribe before publishing: "start=latest" (the default without a
     *    group) delivers only messages published from now on. */
    struct inbox in = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    fm_subscription *sub = NULL;
    CHECK(fm_subscribe(client, "orders", NULL, on_message, &in, &sub));
    printf("subscribed to stream 'orders'\n");

    /* 3. Publish three messages; each returns its partition and offset. */
    const char *bodies[] = {"order #1: 2 apples", "order #2: 1 pear",
                            "order #3: 6 plums"};
    for (int i = 0; i < 3; i++) {
        fm_header hdr = {"content-type", "text/plain"};
        fm_msg msg = {.payload = (const uint8_t *)bodies[i],
                      .payload_len = strlen(bodies[i]),
                      .headers = &hdr,
                      .headers_len = 1};
        fm_position pos;
        CHECK(fm_publish(client, "orders", &msg, &pos));
        printf("  -> published '%s' at partition %u offset %llu\n", bodies[i],
               pos.partition, (unsigned long long)pos.offset);
    }

    /* 4. The callback runs on a library thread: wait (bounded) for it. */
    int got = wait_for(&in, 3, 10);
    if (got < 3) {
        fprintf(stderr, "FAILED: only %d of 3 messages arrived\n", got);
        return 1;
    }
    /* Unsubscribe waits for a running callback, then frees the handle. */
    CHECK(fm_unsubscribe(sub));
    printf("all 3 messages arrived; unsubscribed\n");

    /* 5. A queue job: enqueue, reserve (with a 30 s visibility timeout and up
     *    to 1 s of waiting), process, ack. Unacked jobs come back. */
    const char *task = "resize image 42";
    fm_msg job_msg = {.payload = (const uint8_t *)task,
                      .payload_len = strlen(task)};
    uint64_t job_id = 0;
    CHECK(fm_queue_enqueue(client, "thumbnails", &job_msg, 0, 0, &job_id));
    printf("enqueued job %llu on queue 'thumbnails'\n", (unsigned long long)job_id);

    fm_job *job = NULL;
    CHECK(fm_queue_reserve(client, "thumbnails", 30000, 1000, &job));
    if (job == NULL) { /* FM_OK with NULL means: nothing arrived in time */
        fprintf(stderr, "FAILED: no job to reserve\n");
        return 1;
    }
    size_t len = 0;
    const uint8_t *payload = fm_job_payload(job, &len);
    printf("reserved job %llu (attempt %u): %.*s\n",
           (unsigned long long)fm_job_id(job), fm_job_attempt(job), (int)len,
           (const char *)payload);
    CHECK(fm_queue_ack(client, "thumbnails", fm_job_id(job)));
    fm_job_free(job);
    printf("acked it\n");

    fm_queue_stats stats;
    CHECK(fm_queue_get_stats(client, "thumbnails", &stats));
    printf("queue stats: pending=%llu in_flight=%llu delayed=%llu dead=%llu\n",
           (unsigned long long)stats.pending, (unsigned long long)stats.in_flight,
           (unsigned long long)stats.delayed, (unsigned long long)stats.dead);

    /* 6. Key-value: set returns the key's new revision; get returns an owned
     *    buffer that we free. */
    const char *value = "dark";
    uint64_t rev = 0;
    CHECK(fm_kv_set(client, "settings", "theme", (const uint8_t *)value,
                    strlen(value), 0, &rev));
    printf("kv set settings/theme = %s (revision %llu)\n", value,
           (unsigned long long)rev);
    fm_buf *buf = NULL;
    CHECK(fm_kv_get(client, "settings", "theme", &buf));
    const uint8_t *data = fm_buf_data(buf, &len);
    printf("kv get settings/theme -> %.*s\n", (int)len, (const char *)data);
    int same = len == strlen(value) && memcmp(data, value, len) == 0;
    fm_buf_free(buf);
    if (!same) {
        fprintf(stderr, "FAILED: kv get returned a different value\n");
        return 1;
    }

    /* 7. Close: stops delivery, joins the library's threads, frees. */
    fm_client_close(client);
    printf("closed. demo OK\n");
    return 0;
}
