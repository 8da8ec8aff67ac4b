/* C target agent: executes socket calls on command, see targets/PROTOCOL.md.
 *
 * It uses BSD sockets the way a C program would and reports what they
 * returned: poll(2) for an operation's own timeout, fcntl(O_NONBLOCK) for
 * `nonblock`, strerrorname_np(3) for errno names.  No test logic lives here.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror [-static] -o agent agent.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXLINE 4096          /* bytes in a command line, its '\n' not counted */
#define MAXWORDS 8            /* words kept per line; more only ever means badline */
#define MAXRECV (1 << 20)     /* largest recv MAX */
#define NONE (-1LL)           /* MS = none */
#define SPACES " \t\n\v\f\r\x1c\x1d\x1e\x1f"  /* what Python's str.split() splits on */

struct sock { int fd, family, type; };

static struct sock *socks;    /* socks[h - 1] is handle h; fd is -1 once closed */
static int nsocks, capsocks;

/* The reply of the command being run. */
enum status { OK, ERR, TIMEOUT, PROTO };
static char fields[2 * MAXRECV + 512];  /* " key=value" ... of an ok reply */
static size_t nfields;
static int err_no;                      /* for ERR */
static const char *proto_code;          /* for PROTO */
static char proto_msg[MAXLINE + 64];
static long long t0, t1;                /* ns, around the socket call(s) */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void begin(void) { t0 = now_ns(); }
static void end(void) { t1 = now_ns(); }

__attribute__((format(printf, 1, 2)))
static void add(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nfields += vsnprintf(fields + nfields, sizeof fields - nfields, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 2, 3)))
static enum status proto(const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(proto_msg, sizeof proto_msg, fmt, ap);
    va_end(ap);
    proto_code = code;
    return PROTO;
}

static enum status fail(int e)
{
    err_no = e;
    return ERR;
}

/* ---- argument parsing: each returns 0 after setting a proto reply ---- */

/* A decimal integer in [lo, hi], as Python's int(text, 10) reads it. */
static int number(const char *text, long long lo, long long hi, long long *out)
{
    const char *p = text;
    int neg = (*p == '-');
    long long v = 0;

    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return proto("badarg", "not a number: %s", text), 0;
    for (; *p; p++) {
        if (*p == '_' && p[-1] >= '0' && p[-1] <= '9' && p[1] >= '0' && p[1] <= '9')
            continue;  /* Python allows 1_000 */
        if (*p < '0' || *p > '9')
            return proto("badarg", "not a number: %s", text), 0;
        if (v <= hi)  /* saturates above hi, which is then out of range */
            v = v * 10 + (*p - '0');
    }
    if (neg)
        v = -v;
    if (v < lo || v > hi)
        return proto("badarg", "out of range: %s", text), 0;
    *out = v;
    return 1;
}

static int timeout_ms(const char *text, long long *ms)
{
    if (strcmp(text, "none") == 0)
        return *ms = NONE, 1;
    return number(text, 1, 0x7fffffff, ms);
}

struct keyword { const char *name; int value; };

static int keyword(const struct keyword *table, const char *text, int *value)
{
    for (; table->name; table++)
        if (strcmp(table->name, text) == 0)
            return *value = table->value, 1;
    return proto("badarg", "unknown keyword %s", text), 0;
}

static int handle(const char *text, struct sock **s)
{
    long long h;
    if (!number(text, 0, 0x7fffffff, &h))
        return 0;
    if (h < 1 || h > nsocks || socks[h - 1].fd < 0)
        return proto("badhandle", "no handle %s", text), 0;
    *s = &socks[h - 1];
    return 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* HEX into buf (at least strlen(text) / 2 bytes); `-` is empty. */
static int unhex(const char *text, unsigned char *buf, size_t *len)
{
    size_t n = strlen(text);
    *len = 0;
    if (strcmp(text, "-") == 0)
        return 1;
    if (n % 2)
        return proto("badarg", "bad hex"), 0;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(text[i]), lo = hexval(text[i + 1]);
        if (hi < 0 || lo < 0)
            return proto("badarg", "bad hex"), 0;
        buf[(*len)++] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

/* ADDR PORT for a socket of s's family. */
static int sockaddr(const struct sock *s, const char *addr, const char *port,
                    struct sockaddr_storage *ss, socklen_t *len)
{
    long long p;
    if (!number(port, 0, 65535, &p))
        return 0;
    memset(ss, 0, sizeof *ss);
    if (s->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)p);
        *len = sizeof *sin;
        if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1)
            return 1;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)p);
        *len = sizeof *sin6;
        if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1)
            return 1;
    }
    return proto("badarg", "bad address %s", addr), 0;
}

/* ---- reply fields ---- */

static void add_addr(const struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    unsigned port;

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
        port = ntohs(sin->sin_port);
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
        if (sin6->sin6_scope_id) {  /* like getnameinfo: fe80::1%eth0 */
            char *end = text + strlen(text);
            *end++ = '%';
            if (!if_indextoname(sin6->sin6_scope_id, end))
                sprintf(end, "%u", (unsigned)sin6->sin6_scope_id);
        }
        port = ntohs(sin6->sin6_port);
    }
    add(" addr=%s port=%u", text, port);
}

static enum status add_handle(int fd, int family, int type)
{
    if (nsocks == capsocks) {
        int cap = capsocks ? 2 * capsocks : 16;
        struct sock *grown = realloc(socks, cap * sizeof *grown);
        if (!grown) {
            close(fd);
            return fail(ENOMEM);
        }
        socks = grown;
        capsocks = cap;
    }
    socks[nsocks++] = (struct sock){ fd, family, type };
    add(" h=%d", nsocks);
    return OK;
}

/* ---- an operation's own timeout ---- */

/* poll(2) until the deadline: >0 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ns();
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, left <= 0 ? 0 : (int)((left + 999999) / 1000000));
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

typedef ssize_t call_fn(struct sock *s, void *arg);

/* Make CALL as MS asks.  With `none`, or on a non-blocking socket, it is
 * made once as is.  Otherwise the socket is non-blocking meanwhile and CALL
 * is made each time poll(2) reports EVENTS (at least once, even for MS 0),
 * until it does not fail with EAGAIN or MS has passed.  Returns CALL's result, -2 on timeout. */
static ssize_t timed(struct sock *s, long long ms, short events, call_fn *call, void *arg)
{
    int flags = fcntl(s->fd, F_GETFL);
    if (flags < 0)
        return -1;
    if (ms == NONE || (flags & O_NONBLOCK))
        return call(s, arg);
    if (fcntl(s->fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -1;
    long long deadline = now_ns() + ms * 1000000;
    ssize_t r;
    for (;;) {
        int ready = wait_fd(s->fd, events, deadline);
        if (ready <= 0) {
            r = ready < 0 ? -1 : -2;
            break;
        }
        r = call(s, arg);
        if (r >= 0 || errno != EAGAIN)
            break;
        if (now_ns() >= deadline) {  /* ready, yet it would block, till the end */
            r = -2;
            break;
        }
    }
    int e = errno;
    fcntl(s->fd, F_SETFL, flags);
    errno = e;
    return r;
}

static enum status result(ssize_t r)
{
    if (r == -2)
        return TIMEOUT;
    return r < 0 ? fail(errno) : OK;
}

/* ---- commands: a[] holds the arguments, NULL-terminated ---- */

static const struct keyword families[] = { { "inet", AF_INET }, { "inet6", AF_INET6 }, { 0, 0 } };
static const struct keyword kinds[] = { { "tcp", SOCK_STREAM }, { "udp", SOCK_DGRAM }, { 0, 0 } };
static const struct keyword hows[] = {
    { "rd", SHUT_RD }, { "wr", SHUT_WR }, { "rdwr", SHUT_RDWR }, { 0, 0 }
};

static enum status op_socket(char **a)
{
    int family, type;
    if (!keyword(families, a[1], &family) || !keyword(kinds, a[0], &type))
        return PROTO;
    begin();
    int fd = socket(family, type | SOCK_CLOEXEC, 0);
    end();
    if (fd < 0)
        return fail(errno);
    return add_handle(fd, family, type);
}

enum { NONBLOCK = -1 };
static const struct option { const char *name; int level, opt, nvalues; } options[] = {
    { "reuseaddr", SOL_SOCKET, SO_REUSEADDR, 1 },
    { "linger", SOL_SOCKET, SO_LINGER, 2 },
    { "syncnt", IPPROTO_TCP, TCP_SYNCNT, 1 },
    { "user_timeout", IPPROTO_TCP, TCP_USER_TIMEOUT, 1 },
    { "nonblock", NONBLOCK, 0, 1 },
    { 0, 0, 0, 0 },
};

static const struct option *option(const char *name)
{
    for (const struct option *o = options; o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    proto("badarg", "unknown option %s", name);
    return NULL;
}

static enum status op_setsockopt(char **a)
{
    struct sock *s;
    const struct option *o;
    long long v[2];
    int n = 0, r;

    if (!handle(a[0], &s) || !(o = option(a[1])))
        return PROTO;
    while (a[2 + n])
        n++;
    if (n != o->nvalues)
        return proto("badline", "%s takes %d value(s)", o->name, o->nvalues);
    for (int i = 0; i < n; i++)
        if (!number(a[2 + i], 0, 0x7fffffff, &v[i]))
            return PROTO;
    begin();
    if (o->level == NONBLOCK) {
        int flags = fcntl(s->fd, F_GETFL);
        r = flags < 0 ? -1 : fcntl(s->fd, F_SETFL, v[0] ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
    } else if (o->opt == SO_LINGER) {
        struct linger l = { (int)v[0], (int)v[1] };
        r = setsockopt(s->fd, o->level, o->opt, &l, sizeof l);
    } else {
        int i = (int)v[0];
        r = setsockopt(s->fd, o->level, o->opt, &i, sizeof i);
    }
    end();
    return result(r);
}

static enum status op_getsockopt(char **a)
{
    struct sock *s;
    const struct option *o;
    int r;

    if (!handle(a[0], &s) || !(o = option(a[1])))
        return PROTO;
    begin();
    if (o->level == NONBLOCK) {
        r = fcntl(s->fd, F_GETFL);
        end();
        if (r >= 0)
            add(" value=%d", !!(r & O_NONBLOCK));
    } else if (o->opt == SO_LINGER) {
        struct linger l;
        socklen_t len = sizeof l;
        r = getsockopt(s->fd, o->level, o->opt, &l, &len);
        end();
        if (r >= 0)
            add(" value=%u,%u", (unsigned)l.l_onoff, (unsigned)l.l_linger);
    } else {
        int i;
        socklen_t len = sizeof i;
        r = getsockopt(s->fd, o->level, o->opt, &i, &len);
        end();
        if (r >= 0)
            add(" value=%d", i);
    }
    return result(r);
}

static enum status op_bind(char **a)
{
    struct sock *s;
    struct sockaddr_storage ss;
    socklen_t len;

    if (!handle(a[0], &s) || !sockaddr(s, a[1], a[2], &ss, &len))
        return PROTO;
    begin();
    int r = bind(s->fd, (struct sockaddr *)&ss, len);
    end();
    return result(r);
}

static enum status op_listen(char **a)
{
    struct sock *s;
    long long backlog = SOMAXCONN;

    if (!handle(a[0], &s))
        return PROTO;
    if (strcmp(a[1], "default") != 0 && !number(a[1], 0, 0x7fffffff, &backlog))
        return PROTO;
    begin();
    int r = listen(s->fd, (int)backlog);
    end();
    return result(r);
}

struct accept_arg { struct sockaddr_storage peer; socklen_t len; };

static ssize_t accept_call(struct sock *s, void *arg)
{
    struct accept_arg *p = arg;
    p->len = sizeof p->peer;
    return accept4(s->fd, (struct sockaddr *)&p->peer, &p->len, SOCK_CLOEXEC);
}

static enum status op_accept(char **a)
{
    struct sock *s;
    struct accept_arg p;
    long long ms;

    if (!handle(a[0], &s) || !timeout_ms(a[1], &ms))
        return PROTO;
    begin();
    ssize_t fd = timed(s, ms, POLLIN, accept_call, &p);
    end();
    if (fd < 0)
        return result(fd);
    enum status st = add_handle((int)fd, s->family, s->type);
    if (st == OK)
        add_addr(&p.peer);
    return st;
}

static enum status op_connect(char **a)
{
    struct sock *s;
    struct sockaddr_storage ss;
    socklen_t len;
    long long ms;
    int r, flags;

    if (!handle(a[0], &s) || !sockaddr(s, a[1], a[2], &ss, &len) || !timeout_ms(a[3], &ms))
        return PROTO;
    begin();
    flags = fcntl(s->fd, F_GETFL);
    if (flags < 0 || ms == NONE || (flags & O_NONBLOCK)) {
        r = flags < 0 ? -1 : connect(s->fd, (struct sockaddr *)&ss, len);
    } else if (fcntl(s->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        r = -1;
    } else {
        r = connect(s->fd, (struct sockaddr *)&ss, len);
        if (r < 0 && errno == EINPROGRESS) {
            r = wait_fd(s->fd, POLLOUT, now_ns() + ms * 1000000);
            if (r == 0) {
                r = -2;  /* still in progress, and stays so */
            } else if (r > 0) {
                int e = 0;
                socklen_t elen = sizeof e;
                r = getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &elen);
                if (r == 0 && e != 0 && e != EISCONN) {
                    errno = e;
                    r = -1;
                }
            }
        }
        int e = errno;
        fcntl(s->fd, F_SETFL, flags);
        errno = e;
    }
    end();
    return result(r);
}

static enum status op_send(char **a)
{
    static unsigned char buf[MAXLINE / 2];
    struct sock *s;
    size_t len;

    if (!handle(a[0], &s) || !unhex(a[1], buf, &len))
        return PROTO;
    begin();
    ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
    end();
    if (n < 0)
        return fail(errno);
    add(" n=%zd", n);
    return OK;
}

struct recv_arg { unsigned char *buf; size_t max; struct sockaddr_storage from; socklen_t len; };

static ssize_t recv_call(struct sock *s, void *arg)
{
    struct recv_arg *p = arg;
    if (s->type == SOCK_DGRAM) {
        p->len = sizeof p->from;
        return recvfrom(s->fd, p->buf, p->max, 0, (struct sockaddr *)&p->from, &p->len);
    }
    return recv(s->fd, p->buf, p->max, 0);
}

static enum status op_recv(char **a)
{
    static unsigned char buf[MAXRECV];
    struct sock *s;
    struct recv_arg p = { .buf = buf };
    long long max, ms;

    if (!handle(a[0], &s) || !number(a[1], 1, MAXRECV, &max) || !timeout_ms(a[2], &ms))
        return PROTO;
    p.max = (size_t)max;
    begin();
    ssize_t n = timed(s, ms, POLLIN, recv_call, &p);
    end();
    if (n < 0)
        return result(n);
    add(" n=%zd data=%s", n, n ? "" : "-");
    for (ssize_t i = 0; i < n; i++)
        add("%02x", buf[i]);
    if (s->type == SOCK_DGRAM)
        add_addr(&p.from);
    return OK;
}

static enum status op_shutdown(char **a)
{
    struct sock *s;
    int how;

    if (!handle(a[0], &s) || !keyword(hows, a[1], &how))
        return PROTO;
    begin();
    int r = shutdown(s->fd, how);
    end();
    return result(r);
}

static enum status op_close(char **a)
{
    struct sock *s;

    if (!handle(a[0], &s))
        return PROTO;
    begin();
    int r = close(s->fd);
    end();
    s->fd = -1;  /* the handle is gone either way */
    return result(r < 0 && errno == ECONNRESET ? 0 : r);
}

static enum status name_op(char **a, int (*get)(int, struct sockaddr *, socklen_t *))
{
    struct sock *s;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (!handle(a[0], &s))
        return PROTO;
    begin();
    int r = get(s->fd, (struct sockaddr *)&ss, &len);
    end();
    if (r < 0)
        return fail(errno);
    add_addr(&ss);
    return OK;
}

static enum status op_getsockname(char **a) { return name_op(a, getsockname); }
static enum status op_getpeername(char **a) { return name_op(a, getpeername); }
static enum status op_quit(char **a) { (void)a; return OK; }

static const struct command {
    const char *name;
    int nargs, more;  /* arguments required; more: setsockopt's values */
    enum status (*run)(char **a);
} commands[] = {
    { "socket", 2, 0, op_socket },
    { "setsockopt", 2, 1, op_setsockopt },
    { "getsockopt", 2, 0, op_getsockopt },
    { "bind", 3, 0, op_bind },
    { "listen", 2, 0, op_listen },
    { "accept", 2, 0, op_accept },
    { "connect", 4, 0, op_connect },
    { "send", 2, 0, op_send },
    { "recv", 3, 0, op_recv },
    { "shutdown", 2, 0, op_shutdown },
    { "close", 1, 0, op_close },
    { "getsockname", 1, 0, op_getsockname },
    { "getpeername", 1, 0, op_getpeername },
    { "quit", 0, 0, op_quit },
    { 0, 0, 0, 0 },
};

/* ---- the line protocol ---- */

static void put_pct(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~:/", *p))
            putchar(*p);
        else
            printf("%%%02X", *p);
    }
}

static void reply(enum status st)
{
    long long us = (t1 - t0) / 1000;
    const char *name;

    switch (st) {
    case OK:
        printf("ok %lld%s", us, fields);
        break;
    case ERR:
        name = strerrorname_np(err_no);
        printf("err %s %lld msg=", name ? name : "noerrno", us);
        put_pct(strerror(err_no));
        break;
    case TIMEOUT:
        printf("err timeout %lld msg=timed%%20out", us);
        break;
    case PROTO:
        printf("proto %s msg=", proto_code);
        put_pct(proto_msg);
        break;
    }
    putchar('\n');
    fflush(stdout);
}

/* Read one line into line[MAXLINE + 1], without its '\n'.  Returns -1 at
 * EOF, else 0 with *bad set if the line is not acceptable. */
static int read_line(char *line, const char **bad)
{
    int c, len = 0, total = 0, ascii = 1;  /* total: the line's bytes, its '\n' not counted */

    while ((c = getchar()) != EOF) {
        if (c == '\n')
            break;
        total++;
        if (c >= 0x80)
            ascii = 0;
        if (len < MAXLINE)
            line[len++] = c ? (char)c : '\x7f';  /* a NUL spoils its word, as in Python */
    }
    if (c == EOF && total == 0)
        return -1;
    line[len] = '\0';
    *bad = total > MAXLINE ? "line too long" : !ascii ? "not ASCII" : NULL;
    return 0;
}

static enum status run(char *line, int *quit)
{
    char *words[MAXWORDS + 1], *save;
    int n = 0;

    for (char *w = strtok_r(line, SPACES, &save); w; w = strtok_r(NULL, SPACES, &save)) {
        if (n < MAXWORDS)
            words[n] = w;
        n++;
    }
    words[n < MAXWORDS ? n : MAXWORDS] = NULL;
    if (n == 0)
        return proto("badline", "empty line");
    const struct command *c = commands;
    while (c->name && strcmp(c->name, words[0]) != 0)
        c++;
    if (!c->name)
        return proto("badop", "unknown command %s", words[0]);
    if (n - 1 < c->nargs || (n - 1 > c->nargs && !c->more))
        return proto("badline", "%s takes %d argument(s)", c->name, c->nargs);
    t0 = now_ns();
    t1 = -1;
    enum status st = c->run(words + 1);
    if (t1 < 0)
        t1 = now_ns();
    *quit = (c->run == op_quit);
    return st;
}

int main(void)
{
    static char line[MAXLINE + 1];
    char version[256];
    const char *bad;
    int quit = 0;

    signal(SIGPIPE, SIG_IGN);
    snprintf(version, sizeof version, "gcc %s glibc %s", __VERSION__, gnu_get_libc_version());
    printf("ready proto=1 lang=c version=");
    put_pct(version);
    printf(" pid=%d\n", (int)getpid());
    fflush(stdout);

    while (!quit && read_line(line, &bad) == 0) {
        nfields = 0;
        fields[0] = '\0';
        reply(bad ? proto("badline", "%s", bad) : run(line, &quit));
    }
    return 0;
}
