/*
 * pubsub.c - publish asynchronously, consume with a consumer group.
 *
 *   usage: pubsub [URL]     (default "mem://")
 *
 * A consumer group remembers how far it got: with auto_commit (the default
 * when a group is set) each message's offset is committed after the callback
 * returns, and a later subscription of the same group resumes after it.
 *
 * Build against an installed library:
 *     cc pubsub.c $(pkg-config --cflags --libs flowmesh) -o pubsub
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

#define COUNT 10

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int received;

/* Runs on a library thread, one message at a time, in order per partition. */
static void on_message(void *user_data, const fm_message *msg)
{
    const char *who = user_data;
    printf("[%s] partition %u offset %llu: %.*s\n", who, msg->partition,
           (unsigned long long)msg->offset, (int)msg->payload_len,
           (const char *)msg->payload);
    pthread_mutex_lock(&mu);
    received++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Runs once per fm_publish_async, on a library thread, in issue order. */
static void on_published(void *user_data, fm_status status, fm_position pos)
{
    (void)user_data;
    if (status != FM_OK)
        fprintf(stderr, "async publish failed: %s (%s)\n",
                fm_status_str(status), fm_last_error());
    else
        printf("stored at partition %u offset %llu\n", pos.partition,
               (unsigned long long)pos.offset);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : "mem://";
    fm_client *c = NULL;
    CHECK(fm_client_connect(url, NULL, &c));

    /* Fire-and-forget publishing; fm_flush waits until all have called back. */
    for (int i = 0; i < COUNT; i++) {
        char body[64];
        int n = snprintf(body, sizeof body, "temperature reading %d", i);
        fm_msg m = {.payload = (const uint8_t *)body, .payload_len = (size_t)n};
        CHECK(fm_publish_async(c, "sensors", &m, on_published, NULL));
    }
    CHECK(fm_flush(c, 5000));

    /* Consume as group "dashboard" from the beginning of the stream. */
    fm_options *o = fm_options_new();
    CHECK(fm_options_set(o, "group", "dashboard"));
    CHECK(fm_options_set(o, "start", "earliest"));
    fm_subscription *sub = NULL;
    CHECK(fm_subscribe(c, "sensors", o, on_message, "dashboard", &sub));
    fm_options_free(o);

    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (received < COUNT && pthread_cond_timedwait(&cv, &mu, &deadline) == 0) {
    }
    int got = received;
    pthread_mutex_unlock(&mu);
    CHECK(fm_unsubscribe(sub)); /* also flushes pending auto-commits */
    if (got < COUNT) {
        fprintf(stderr, "FAILED: %d of %d messages arrived\n", got, COUNT);
        return 1;
    }

    /* The group's committed offset: the last message it processed. */
    uint64_t committed = 0;
    CHECK(fm_get_offset(c, "sensors", "dashboard", 0, &committed));
    printf("group 'dashboard' committed offset %llu\n", (unsigned long long)committed);

    /* Reading is also possible without a subscription. */
    fm_messages *msgs = NULL;
    CHECK(fm_read(c, "sensors", 0, 0, 3, &msgs));
    for (size_t i = 0; i < fm_messages_len(msgs); i++) {
        const fm_message *m = fm_messages_get(msgs, i);
        printf("read offset %llu: %.*s\n", (unsigned long long)m->offset,
               (int)m->payload_len, (const char *)m->payload);
    }
    fm_messages_free(msgs);

    fm_client_close(c);
    return 0;
}
