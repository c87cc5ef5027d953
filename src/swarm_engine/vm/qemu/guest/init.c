/* swarm-engine guest /init in C: what guest/init (the busybox script) does, without
 * starting ~25 busybox processes (each fork + exec costs ~10-20 ms under TCG). Built
 * static at image-build time, next to the C agent:
 *
 *     gcc -static -Os -o init init.c
 *
 * Loads the modules listed in /modules/order (and /modules/order.net with swarm.net=1),
 * mounts the read-only squashfs root with a tmpfs overlay, copies the guest agent in,
 * switches root and stays PID 1: it reaps orphans and ends the guest when the agent exits.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* "swarm-init: <what> <arg> (<errno text>)" on the console. */
static void say(const char *what, const char *arg) {
    const char *why = strerror(errno);
    fprintf(stderr, "swarm-init: %s %s (%s)\n", what, arg, why);
}

/* End the guest: a reset, which ends QEMU (it runs with -no-reboot) on every kernel; a
 * power-off only halts a kernel without ACPI (the tiny image's), leaving QEMU running and
 * the host waiting for a guest that is gone. */
static void end_guest(void) {
    sync();
    reboot(RB_AUTOBOOT);
}

static void die(const char *what, const char *arg) {
    say(what, arg);
    end_guest();
    _exit(1);
}

static void mounted(const char *src, const char *dst, const char *type, unsigned long flags,
                    const char *data) {
    if (mount(src, dst, type, flags, data)) die("cannot mount", dst);
}

static void load_modules(const char *list) {
    FILE *f = fopen(list, "re");
    if (!f) return;
    char name[128], path[192];
    while (fgets(name, sizeof name, f)) {
        name[strcspn(name, "\n")] = '\0';
        if (!name[0]) continue;
        snprintf(path, sizeof path, "/modules/%s.ko", name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || syscall(SYS_finit_module, fd, "", 0)) say("insmod failed:", name);
        if (fd >= 0) close(fd);
    }
    fclose(f);
}

static void copy(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st)) die("cannot read", src);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (out < 0) die("cannot write", dst);
    for (off_t off = 0; off < st.st_size;)
        if (sendfile(out, in, &off, (size_t)(st.st_size - off)) <= 0) die("cannot copy to", dst);
    close(in);
    close(out);
}

static int run(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    return status;
}

/* Free the initramfs (it is RAM): delete everything on the root device but `keep`. */
static void delete_contents(int dirfd, dev_t root_dev) {
    DIR *d = fdopendir(dirfd);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) || st.st_dev != root_dev) continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub >= 0) delete_contents(sub, root_dev);
            unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, e->d_name, 0);
        }
    }
    closedir(d);
}

static void lo_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        if (s >= 0) ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    if (s >= 0) close(s);
}

int main(void) {
    const char *dirs[] = {"/proc", "/sys", "/dev", "/ro", "/rw", "/newroot"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) mkdir(dirs[i], 0755);
    mounted("proc", "/proc", "proc", 0, NULL);
    mounted("sysfs", "/sys", "sysfs", 0, NULL);
    mounted("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    char cmdline[4096] = " ";
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, cmdline + 1, sizeof cmdline - 3) : 0;
    if (fd >= 0) close(fd);
    if (n > 0) {
        cmdline[n + 1] = '\0';
        cmdline[strcspn(cmdline, "\n")] = ' ';
    }
    int net = strstr(cmdline, " swarm.net=1 ") != NULL;
    load_modules("/modules/order");
    if (net) load_modules("/modules/order.net");
    mounted("/dev/vda", "/ro", "squashfs", MS_RDONLY, NULL);
    mounted("tmpfs", "/rw", "tmpfs", 0, "mode=0755");
    mkdir("/rw/upper", 0755);
    mkdir("/rw/work", 0755);
    mounted("overlay", "/newroot", "overlay", 0,
            "lowerdir=/ro,upperdir=/rw/upper,workdir=/rw/work");
    const char *inner[] = {"/newroot/workspace", "/newroot/opt", "/newroot/opt/swarm",
                           "/newroot/dev", "/newroot/proc", "/newroot/sys"};
    for (size_t i = 0; i < sizeof inner / sizeof *inner; i++) mkdir(inner[i], 0755);
    copy("/swarm-agent", "/newroot/opt/swarm/swarm-agent");
    copy("/bin/busybox", "/newroot/opt/swarm/busybox");
    lo_up();
    if (net) {
        char *cmds[][8] = {
            {"/bin/busybox", "ip", "link", "set", "eth0", "up", NULL},
            {"/bin/busybox", "ip", "addr", "add", "10.0.2.15/24", "dev", "eth0", NULL},
            {"/bin/busybox", "ip", "route", "add", "default", "via", "10.0.2.2", NULL},
        };
        for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
            if (run(cmds[i])) say("network setup failed:", cmds[i][2]);
    }
    mounted("/dev", "/newroot/dev", NULL, MS_MOVE, NULL);
    mounted("/proc", "/newroot/proc", NULL, MS_MOVE, NULL);
    mounted("/sys", "/newroot/sys", NULL, MS_MOVE, NULL);
    /* switch_root: empty the initramfs, make /newroot the root, stay PID 1. */
    struct stat root;
    if (chdir("/newroot") || stat("/", &root)) die("cannot enter", "/newroot");
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd >= 0) delete_contents(rootfd, root.st_dev);
    mounted(".", "/", NULL, MS_MOVE, NULL);
    if (chroot(".") || chdir("/")) die("cannot chroot to", "/newroot");
    /* favordynmods: moving a process into a cgroup (each command goes into its own) no
     * longer waits for an RCU grace period (several ms, timer-driven); fork and exit pay
     * an atomic operation instead. Kernels without the option mount without it. */
    if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, "favordynmods")
        && mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, NULL)) { /* no cgroups: still fine */ }
    pid_t agent = fork();
    if (agent == 0) {
        char *argv[] = {"/opt/swarm/swarm-agent", NULL};
        execv(argv[0], argv);
        die("cannot start", argv[0]);
    }
    /* PID 1: reap every orphan; end the guest when the agent is gone, saying how it ended
     * on the console (the host names a VM that ended mid-call by that line). */
    int status = 0;
    for (;;) {
        pid_t gone = wait(&status);
        if (gone == agent) {
            if (WIFSIGNALED(status))
                fprintf(stderr, "swarm-init: the guest agent was killed by signal %d (%s)\n",
                        WTERMSIG(status), strsignal(WTERMSIG(status)));
            else
                fprintf(stderr, "swarm-init: the guest agent exited (%d)\n", WEXITSTATUS(status));
            break;
        }
        if (gone < 0 && errno == ECHILD) break;
    }
    end_guest();
    return 0;
}
