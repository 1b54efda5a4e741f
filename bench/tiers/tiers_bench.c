/* tiers_bench.c - publish throughput of one thread through fm_publish_with,
 * per delivery tier, on any URL. Prints one line: "<msgs> <seconds> <msg/s>
 * <delivered>".
 *
 *   tiers_bench URL TIER N [SIZE] [SUBSCRIBE]
 *
 * TIER: memory | memory-ack | persistent. SUBSCRIBE=1 keeps one callback
 * subscriber on the stream and reports what it received by the end. */
#include <flowmesh.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_long delivered;

static void on_msg(void *ud, const fm_message *m)
{
    (void)ud;
    (void)m;
    atomic_fetch_add(&delivered, 1);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s URL memory|memory-ack|persistent N [SIZE] [SUBSCRIBE]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *tier = argv[2];
    long n = atol(argv[3]);
    size_t size = argc > 4 ? (size_t)atol(argv[4]) : 128;
    int subscribe = argc > 5 && atoi(argv[5]);
    fm_client *c;
    if (fm_client_connect(url, NULL, &c) != FM_OK) {
        fprintf(stderr, "connect %s: %s\n", url, fm_last_error());
        return 1;
    }
    fm_options *o = fm_options_new();
    fm_options_set(o, "tier", strncmp(tier, "memory", 6) == 0 ? "memory" : "persistent");
    if (strcmp(tier, "memory-ack") == 0)
        fm_options_set(o, "require_ack", "true");
    char subject[64];
    snprintf(subject, sizeof subject, "bench%d.tick", (int)getpid());
    fm_subscription *sub = NULL;
    if (subscribe) {
        char pattern[64];
        snprintf(pattern, sizeof pattern, "bench%d.>", (int)getpid());
        if (fm_subscribe(c, pattern, NULL, on_msg, NULL, &sub) != FM_OK) {
            fprintf(stderr, "subscribe: %s\n", fm_last_error());
            return 1;
        }
    }
    unsigned char *payload = calloc(1, size);
    fm_msg m = {.payload = payload, .payload_len = size};
    /* Warm-up: connections, the stream of the persistent tier. */
    for (int i = 0; i < 100; i++)
        fm_publish_with(c, subject, &m, o, NULL);
    double start = now_s();
    for (long i = 0; i < n; i++) {
        if (fm_publish_with(c, subject, &m, o, NULL) != FM_OK) {
            fprintf(stderr, "publish %ld: %s\n", i, fm_last_error());
            return 1;
        }
    }
    double secs = now_s() - start;
    if (sub) {
        /* Bounded wait for the subscriber to drain what it will get. */
        long last = -1;
        for (int i = 0; i < 50 && atomic_load(&delivered) != last; i++) {
            last = atomic_load(&delivered);
            usleep(100 * 1000);
        }
        fm_unsubscribe(sub);
    }
    printf("%ld %.4f %.0f %ld\n", n, secs, n / secs, (long)atomic_load(&delivered));
    fm_options_free(o);
    free(payload);
    fm_client_close(c);
    return 0;
}
