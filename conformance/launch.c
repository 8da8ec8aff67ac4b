/* tcc-launch NETNS UID -- PROGRAM [ARG...]: start an agent in its sandbox (conformance/privilege.py).
 *
 * Runs PROGRAM in the network namespace NETNS (a file such as /run/netns/NAME), as PID 1 of a PID
 * namespace of its own, with no capabilities (bounding set, inheritable and ambient sets emptied),
 * no_new_privs, and as UID (and its group, with no supplementary groups) when UID is not ours.
 *
 * It does in one exec what util-linux did in four (setpriv --pdeathsig KILL, ip netns exec NS,
 * unshare --pid --fork --kill-child, setpriv --no-new-privs ...): those cost about 9 ms of CPU an
 * agent, most of it the dynamic loader of each; this static binary costs about 1 ms. No library or
 * tool does this sequence in one process, so it is written here, and it keeps their semantics:
 *  - this process dies with the harness thread that started it (PR_SET_PDEATHSIG, SIGKILL), and PID 1
 *    dies with this process (its PDEATHSIG), and the kernel kills every process of the PID namespace
 *    with its PID 1: a killed launcher leaves nothing running, whatever the agent forked or ignores;
 *  - like `unshare --fork`, this process blocks SIGINT and SIGTERM (the agent gets them), waits for
 *    the agent and exits with its status, or dies of the signal that ended it;
 *  - the agent's other file descriptors are left as they are (the harness passes the ones it means
 *    to, and closes the rest when it starts this).
 * Exit status 127 with a line on stderr naming the step: a step of the sandbox failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *step)
{
    fprintf(stderr, "tcc-launch: %s: %s\n", step, strerror(errno));
    _exit(127);
}

/* Every capability out of reach: the bounding set (so no exec gains one, even as uid 0), the
 * inheritable and ambient sets; then the ids (which empties the permitted and effective sets of a
 * non-root uid); then no_new_privs. A change of ids clears PDEATHSIG: it is set again. */
static void drop(uid_t uid)
{
    for (int cap = 0; cap < 64; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            fail("dropping the capability bounding set");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        fail("clearing the ambient capabilities");
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &head, data) < 0)
        fail("capget");
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
        data[i].inheritable = 0;
    if (syscall(SYS_capset, &head, data) < 0)
        fail("clearing the inheritable capabilities");
    if (uid != geteuid()) {
        if (setgroups(0, NULL) < 0)
            fail("setgroups");
        if (setresgid(uid, uid, uid) < 0)
            fail("setresgid");
        if (setresuid(uid, uid, uid) < 0)
            fail("setresuid");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail("PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fail("PR_SET_PDEATHSIG");
}

int main(int argc, char **argv)
{
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: tcc-launch NETNS UID -- PROGRAM [ARG...]\n");
        return 2;
    }
    char *end;
    errno = 0;
    long uid = strtol(argv[2], &end, 10);
    if (errno || *end || end == argv[2] || uid < 0 || uid > 0x7fffffff) {
        fprintf(stderr, "tcc-launch: UID must be a number, got '%s'\n", argv[2]);
        return 2;
    }
    pid_t harness = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fail("PR_SET_PDEATHSIG");
    if (getppid() != harness) /* the harness ended before PDEATHSIG was set */
        _exit(127);
    int ns = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        fail(argv[1]);
    if (setns(ns, CLONE_NEWNET) < 0)
        fail("entering the network namespace");
    close(ns);
    if (unshare(CLONE_NEWPID) < 0)
        fail("unshare(CLONE_NEWPID)");

    sigset_t quiet, before;
    sigemptyset(&quiet);
    sigaddset(&quiet, SIGINT);
    sigaddset(&quiet, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &quiet, &before) < 0)
        fail("sigprocmask");
    int alive[2]; /* the launcher holds alive[1] open: the agent sees POLLHUP once the launcher is gone */
    if (pipe2(alive, O_CLOEXEC) < 0)
        fail("pipe2");
    pid_t agent = fork();
    if (agent < 0)
        fail("fork");
    if (agent == 0) { /* PID 1 of the new PID namespace */
        close(alive[1]);
        if (sigprocmask(SIG_SETMASK, &before, NULL) < 0)
            fail("sigprocmask");
        drop((uid_t)uid);
        struct pollfd gone = {alive[0], 0, 0};
        if (poll(&gone, 1, 0) != 0) /* the launcher died before PDEATHSIG was (last) set */
            _exit(127);
        execvp(argv[4], argv + 4);
        fail(argv[4]);
    }
    close(alive[0]);
    int status;
    while (waitpid(agent, &status, 0) < 0)
        if (errno != EINTR)
            fail("waitpid");
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    int sig = WTERMSIG(status);
    signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &before, NULL);
    kill(getpid(), sig);
    return 128 + sig;
}
