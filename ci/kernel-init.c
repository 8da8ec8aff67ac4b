/* PID 1 of a guest kernel booted by conformance/kernels.py (python3 -m conformance kernel).
 *
 * Built static by the host (gcc -static), so it needs nothing from the guest:
 * under QEMU it is /init of a small initramfs (with the modules needed to reach
 * the host's files), under user-mode-linux it is init= on the host's root.
 *
 * Its settings come from the kernel command line, which the kernel hands to
 * init as environment variables:
 *   tcc_root=9p|virtiofs|hostfs  how the host's root is shared (hostfs: it is
 *                                already this kernel's root, read-only)
 *   tcc_mods=A.ko:B.ko:...       modules to load first, in order (dependencies first)
 *   tcc_script=PATH              the script to run in the new root (ci/kernel-init.sh)
 *   tcc_job=PATH                 its argument: the run's folder on the host
 *
 * It loads the modules, mounts the host's root read-only under a tmpfs overlay
 * (so the guest can write, and nothing reaches the host), makes that overlay
 * the root, runs the script, reaps orphans, and powers the machine off when the
 * script ends. On any failure it says why on the console and powers off: the
 * host sees no result and shows the console's tail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    if (write(1, "tcc-init: ", 10) < 0 || write(1, buf, n) < 0) return;
}

static void power_off(void) {
    sync();
    reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT); /* QEMU runs with -no-reboot: a reboot ends it too */
    for (;;) pause();
}

static void die(const char *what) {
    say("FATAL: %s: %s", what, strerror(errno));
    power_off();
}

static double uptime(void) {
    char buf[64] = "";
    int fd = open("/proc/uptime", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    return atof(buf);
}

static void load_modules(char *list) {
    for (char *path = strtok(list, ":"); path; path = strtok(NULL, ":")) {
        if (!*path) continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die(path);
        if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) die(path);
        close(fd);
    }
}

/* Mount the host's share: the virtio device may still be probing, so retry for up to 10 s. */
static void mount_share(const char *kind, const char *where) {
    const char *type = strcmp(kind, "9p") == 0 ? "9p" : "virtiofs";
    const char *opts = strcmp(kind, "9p") == 0 ? "trans=virtio,version=9p2000.L,msize=512000,cache=loose" : "";
    for (int i = 0; i < 200; i++) {
        if (mount("root", where, type, MS_RDONLY, opts) == 0) return;
        if (errno != ENOENT && errno != ENODEV && errno != ENXIO && errno != EINVAL) break;
        usleep(50000);
    }
    die("mount the host's root");
}

int main(void) {
    const char *root = getenv("tcc_root"), *script = getenv("tcc_script"), *job = getenv("tcc_job");
    char *mods = getenv("tcc_mods");
    mkdir("/proc", 0555);
    mkdir("/dev", 0755);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL); /* EBUSY where the kernel mounted it: fine */
    say("started uptime=%.2f", uptime());
    if (!root || !script || !job) {
        errno = EINVAL;
        die("tcc_root, tcc_script and tcc_job must be on the kernel command line");
    }
    if (mods) load_modules(mods);

    /* The writable layer: a tmpfs with the overlay's upper and work folders, and its mount point. */
    const char *base = strcmp(root, "hostfs") == 0 ? "/run" : "/rw"; /* hostfs: / is read-only, /run exists */
    char upper[64], work[64], merged[64], lower[64], opts[256];
    mkdir(base, 0755);
    if (mount("tmpfs", base, "tmpfs", 0, "mode=0755") != 0) die("mount the tmpfs for the overlay");
    snprintf(upper, sizeof upper, "%s/upper", base);
    snprintf(work, sizeof work, "%s/work", base);
    snprintf(merged, sizeof merged, "%s/root", base);
    snprintf(lower, sizeof lower, "%s/lower", base);
    mkdir(upper, 0755);
    mkdir(work, 0755);
    mkdir(merged, 0755);
    if (strcmp(root, "hostfs") == 0) {
        snprintf(lower, sizeof lower, "/");
    } else {
        mkdir(lower, 0755);
        mount_share(root, lower);
    }
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
    if (mount("overlay", merged, "overlay", 0, opts) != 0) die("mount the overlay");
    umount2("/proc", MNT_DETACH);
    umount2("/dev", MNT_DETACH);
    if (chdir(merged) != 0) die("chdir to the overlay");
    if (strcmp(root, "hostfs") == 0) { /* a real root: pivot_root, then drop the old one */
        mkdir(".oldroot", 0700);
        if (syscall(SYS_pivot_root, ".", ".oldroot") != 0) die("pivot_root");
        if (chdir("/") != 0) die("chdir /");
        umount2("/.oldroot", MNT_DETACH);
        rmdir("/.oldroot");
    } else { /* the initramfs cannot be pivoted: move the overlay over it */
        if (mount(".", "/", NULL, MS_MOVE, NULL) != 0) die("move the overlay to /");
        if (chroot(".") != 0 || chdir("/") != 0) die("chroot to the overlay");
    }

    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        execl("/bin/bash", "bash", script, job, (char *)NULL);
        die("exec /bin/bash");
    }
    for (;;) { /* PID 1 reaps every orphan; the script's end ends the machine */
        int status;
        pid_t pid = wait(&status);
        if (pid == child || (pid < 0 && errno == ECHILD)) break;
    }
    say("power off");
    power_off();
    return 0;
}
