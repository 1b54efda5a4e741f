/* harness.c - the runner and helpers declared in harness.h. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#ifdef HAVE_ASAN
/* From <sanitizer/allocator_interface.h> (not always installed). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#define MAX_TESTS 256
static struct test_case tests[MAX_TESTS];
static int ntests;
int harness_failures;
static const char *current;
static int current_index;

void harness_register(const char *name, test_fn fn, int kind)
{
    if (ntests < MAX_TESTS)
        tests[ntests++] = (struct test_case){name, fn, kind};
}

const char *test_url(void)
{
    const char *u = getenv("FM_TEST_URL");
    return u && *u ? u : "mem://";
}

int broker_mode(void)
{
    return strncmp(test_url(), "grpc://", 7) == 0;
}

static int kind_selected(int kind)
{
    const char *bin = getenv("FM_TEST_FLOWMESH");
    if (bin && *bin)
        return kind == TK_KILL;
    if (strncmp(test_url(), "mem://", 6) == 0)
        return kind == TK_EMBEDDED || kind == TK_CORE;
    return kind == TK_CORE || (kind == TK_BROKER && broker_mode());
}

/* FM_TEST_SKIP: comma-separated test names not run (a pass lists the cases
 * its engine does not map yet, so the rest of the pass still gates). */
static int skipped(const char *name)
{
    const char *list = getenv("FM_TEST_SKIP");
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static const char *kind_name(int kind)
{
    return kind == TK_CORE ? "core" : kind == TK_BROKER ? "broker" : kind == TK_KILL ? "kill" : "embedded";
}

void harness_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "    %s:%d: [%s] ", file, line, current ? current : "?");
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
    harness_failures++;
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : getenv("FM_TEST_FILTER");
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *bin = getenv("FM_TEST_FLOWMESH");
    if (bin && *bin)
        printf("flowmesh C ABI tests, library %s, broker kill tests only (they start their "
               "own brokers: %s)\n", fm_version(), bin);
    else
        printf("flowmesh C ABI tests, library %s, FM_TEST_URL=%s (%s)\n", fm_version(),
               test_url(),
               strncmp(test_url(), "mem://", 6) == 0 ? "embedded + core tests"
               : broker_mode()                       ? "core + broker tests"
                                                     : "core tests");
    for (int i = 0; i < ntests; i++) {
        if (!kind_selected(tests[i].kind))
            continue;
        if (filter && *filter && !strstr(tests[i].name, filter))
            continue;
        if (skipped(tests[i].name)) {
            printf("skip %-50s (FM_TEST_SKIP)\n", tests[i].name);
            continue;
        }
        current = tests[i].name;
        current_index = i;
        harness_failures = 0;
        int64_t t0 = now_ms();
        tests[i].fn();
        int64_t dt = now_ms() - t0;
        if (harness_failures == 0) {
            passed++;
            printf("ok   %-50s %6lld ms  %s\n", tests[i].name, (long long)dt,
                   kind_name(tests[i].kind));
        } else {
            failed++;
            printf("FAIL %-50s %6lld ms  %s\n", tests[i].name, (long long)dt,
                   kind_name(tests[i].kind));
        }
    }
    current = NULL;
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

void waiter_init(struct waiter *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->count = 0;
}

void waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

void waiter_add(struct waiter *w, long n)
{
    pthread_mutex_lock(&w->mu);
    w->count += n;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

long waiter_get(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    long c = w->count;
    pthread_mutex_unlock(&w->mu);
    return c;
}

long waiter_wait(struct waiter *w, long want, long timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->count < want) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) == ETIMEDOUT)
            break;
    }
    long c = w->count;
    pthread_mutex_unlock(&w->mu);
    return c;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own fd */
}

long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

long heap_bytes(void)
{
#ifdef HAVE_ASAN
    return (long)__sanitizer_get_current_allocated_bytes();
#else
    return -1;
#endif
}

int wait_thread_count(int want, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    int n = thread_count();
    while (n != want && now_ms() < deadline) {
        sleep_ms(2);
        n = thread_count();
    }
    return n;
}

long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    long x = strtol(v, &end, 10);
    return *end ? def : x;
}

long slow(void)
{
    return env_long("FM_TEST_SLOW", 1);
}

int under_valgrind(void)
{
    return env_long("FM_TEST_VALGRIND", 0) != 0;
}

fm_client *mem_client(void)
{
    fm_client *c = NULL;
    fm_status st = fm_client_connect("mem://", NULL, &c);
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "connect mem:// -> %s (%s)",
                     fm_status_str(st), fm_last_error());
        return NULL;
    }
    return c;
}

fm_msg text_msg(const char *s)
{
    fm_msg m;
    memset(&m, 0, sizeof m);
    m.payload = (const uint8_t *)s;
    m.payload_len = strlen(s);
    return m;
}

int bytes_eq(const void *p, size_t len, const char *s)
{
    return len == strlen(s) && (len == 0 || memcmp(p, s, len) == 0);
}

const char *test_ns(void)
{
    static char ns[64];
    if (strncmp(test_url(), "mem://", 6) == 0)
        return "default";
    snprintf(ns, sizeof ns, "ct%ld-%d", (long)getpid(), current_index);
    return ns;
}

const char *qualified(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "default/%s/%s", test_ns(), name);
    return buf;
}

fm_client *test_client_opts(fm_options *opts)
{
    fm_client *c = NULL;
    fm_options *own = NULL;
    const char *url = test_url();
    if (strncmp(url, "mem://", 6) != 0) {
        if (!opts)
            opts = own = fm_options_new();
        if (!opts || fm_options_set(opts, "namespace", test_ns()) != FM_OK) {
            harness_fail(__FILE__, __LINE__, "cannot set namespace %s", test_ns());
            fm_options_free(own);
            return NULL;
        }
    }
    fm_status st = fm_client_connect(url, opts, &c);
    fm_options_free(own);
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "connect %s -> %s (%s)", url, fm_status_str(st),
                     fm_last_error());
        return NULL;
    }
    return c;
}

fm_client *test_client(void)
{
    return test_client_opts(NULL);
}

fm_client *shared_client(const char *mem_name)
{
    if (strncmp(test_url(), "mem://", 6) != 0)
        return test_client();
    char url[256];
    snprintf(url, sizeof url, "mem://%s", mem_name);
    fm_client *c = NULL;
    fm_status st = fm_client_connect(url, NULL, &c);
    if (st != FM_OK) {
        harness_fail(__FILE__, __LINE__, "connect %s -> %s (%s)", url, fm_status_str(st),
                     fm_last_error());
        return NULL;
    }
    return c;
}
