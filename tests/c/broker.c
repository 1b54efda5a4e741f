/* broker.c - see broker.h. */
#include "broker.h"
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* One attempt on b->port: 0 once the port accepts, -1 if the broker
 * exited (port taken?) or did not open the port in time. `extra`: more
 * arguments for `serve` (NULL-terminated) or NULL. */
static int spawn_on_port(struct broker *b, const char *data, const char *log, const char *const *extra)
{
    const char *bin = getenv("FM_TEST_FLOWMESH");
    if (!bin || !*bin || b->port <= 0)
        return -1;
    char listen[32];
    const char *argv[24] = {"flowmesh", "serve", "--listen", listen, "--data", data};
    size_t argc = 6;
    for (; extra && *extra; extra++) {
        if (argc + 1 >= sizeof argv / sizeof argv[0])
            return -1;
        argv[argc++] = *extra;
    }
    argv[argc] = NULL;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", b->port);
    snprintf(b->url, sizeof b->url, "grpc://127.0.0.1:%d", b->port);
    int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        if (logfd >= 0)
            close(logfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (logfd >= 0) {
            dup2(logfd, 1);
            dup2(logfd, 2);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    b->pid = pid;
    int64_t deadline = now_ms() + 10000 * slow();
    while (now_ms() < deadline) {
        if (port_open(b->port))
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            b->pid = 0;
            return -1; /* it exited (port taken?) */
        }
        sleep_ms(5);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    b->pid = 0;
    return -1;
}

int broker_start_args(struct broker *b, const char *data, const char *log, const char *const *extra)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        b->port = free_port();
        if (b->port <= 0)
            return -1;
        if (spawn_on_port(b, data, log, extra) == 0)
            return 0;
    }
    return -1;
}

int broker_start(struct broker *b, const char *data, const char *log)
{
    return broker_start_args(b, data, log, NULL);
}

int broker_restart(struct broker *b, const char *data, const char *log)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        if (spawn_on_port(b, data, log, NULL) == 0)
            return 0;
        sleep_ms(100);
    }
    return -1;
}

void broker_stop(struct broker *b, int sig)
{
    if (b->pid <= 0)
        return;
    kill(b->pid, sig);
    int64_t deadline = now_ms() + 10000 * slow();
    while (now_ms() < deadline) {
        if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
            b->pid = 0;
            return;
        }
        sleep_ms(2);
    }
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
}

void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char sub[4096];
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                rm_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* SIGSTOP is delivered asynchronously: wait (bounded) until the kernel
 * reports the process stopped ('T' in /proc/<pid>/stat), so the test's next
 * call can not be answered by a broker that has not stopped yet. */
int broker_freeze(struct broker *b)
{
    if (b->pid <= 0 || kill(b->pid, SIGSTOP) != 0)
        return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)b->pid);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        char state = 0;
        if (f) {
            /* pid (comm) state ...: comm may hold spaces, so find the last ')' */
            char buf[512];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            char *close = strrchr(buf, ')');
            if (close && close[1] == ' ')
                state = close[2];
        }
        if (state == 'T' || state == 't')
            return 0;
        usleep(1000);
    }
    return -1;
}
