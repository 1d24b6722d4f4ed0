/* Measurement only (bench/WARM_LATENCY.md): LD_PRELOAD shim that turns Nagle off on every TCP socket a process
 * connects, to run the unmodified lambda_runtime client with TCP_NODELAY. hyper-util's HttpConnector calls
 * setsockopt(TCP_NODELAY, 0) itself right after connect (its `nodelay` defaults to false), so the shim both sets it
 * before connect(2) and turns any later TCP_NODELAY=0 into 1.
 *   gcc -shared -fPIC -O2 -o /tmp/warm-target/nodelay_shim.so nodelay_shim.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int (*real_setsockopt)(int, int, int, const void *, socklen_t);

int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
    if (!real_setsockopt)
        real_setsockopt = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
    static const int one = 1;
    if (level == IPPROTO_TCP && name == TCP_NODELAY) return real_setsockopt(fd, level, name, &one, sizeof one);
    return real_setsockopt(fd, level, name, value, len);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    int type = 0;
    socklen_t tl = sizeof type;
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) &&
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return real(fd, addr, len);
}
