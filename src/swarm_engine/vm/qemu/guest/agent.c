/* swarm-engine guest agent in C: the same framed protocol as guest/agent.py, without
 * a Python start at boot (~2 s under TCG). Built static at image-build time:
 *
 *     gcc -static -Os -pthread -o swarm-agent agent.c
 *
 * Frame: 8-byte header ">II" (json length, payload length), a JSON object, then the raw
 * payload. Requests carry an "id"; every reply carries the same "id". The agent opens the
 * port once, read-write, and announces itself with a "ready" frame. Requests: exec (on a
 * worker thread; started vfork-style, in its own session and, with cgroup v2, a cgroup
 * of its own whose pids.max is the step's process limit; over when its own process
 * exits, which kills what it left running), put, get, ping, kill, restored, shutdown.
 * With the memory controller, every command's cgroup is under one `commands` cgroup whose
 * memory.max leaves the guest a reserve (see setup_commands_cgroup): the kernel's OOM
 * killer then acts among the commands, never on the agent or the guest as a whole.
 * While a command runs, a guard thread kills the command holding the most memory once the
 * guest (or the commands' share) is nearly out of it (see memory_guard), before the
 * kernel would thrash.
 * Arguments: --workspace DIR --cgroup-root DIR|none --fd N --port DEV.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/random.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
#define MAX_JSON (16u * 1024 * 1024)
#define MAX_PAYLOAD (64u * 1024 * 1024) /* = MAX_FILE in the host's protocol.py */
#define CHUNK (64 * 1024)
#define PORT_NAME "swarm.0"
#define GUEST_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- a small JSON reader ---------------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct json {
    enum jtype type;
    double num;
    int boolean;
    char *str;            /* J_STR (UTF-8, NUL-terminated); key for object members */
    struct json *child;   /* J_ARR / J_OBJ: first element */
    struct json *next;    /* next sibling */
    char *key;
} json;

typedef struct {
    const char *p, *end;
} jparser;

static void jfree(json *j) {
    while (j) {
        json *next = j->next;
        jfree(j->child);
        free(j->str);
        free(j->key);
        free(j);
        j = next;
    }
}

static void jskip(jparser *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static char *jstring(jparser *s) {
    if (s->p >= s->end || *s->p != '"') return NULL;
    s->p++;
    const char *start = s->p;
    while (s->p < s->end && *s->p != '"') s->p += (*s->p == '\\') ? 2 : 1;
    if (s->p >= s->end) return NULL;
    char *out = malloc((size_t)(s->p - start) + 1), *o = out;
    if (!out) return NULL;
    for (const char *q = start; q < s->p; q++) {
        if (*q != '\\') { *o++ = *q; continue; }
        q++;
        switch (*q) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            unsigned cp, lo;
            if (s->p - q < 5 || hex4(q + 1, &cp)) { free(out); return NULL; }
            q += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s->p - q >= 7 && q[1] == '\\' && q[2] == 'u'
                && !hex4(q + 3, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                q += 6;
            }
            o += put_utf8(o, cp);
            break;
        }
        default: *o++ = *q; break; /* \" \\ \/ */
        }
    }
    *o = '\0';
    s->p++;
    return out;
}

static json *jvalue(jparser *s, int depth) {
    jskip(s);
    if (s->p >= s->end || depth > 64) return NULL;
    json *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    char c = *s->p;
    if (c == '"') {
        j->type = J_STR;
        if (!(j->str = jstring(s))) goto bad;
    } else if (c == '{' || c == '[') {
        j->type = c == '{' ? J_OBJ : J_ARR;
        char close = c == '{' ? '}' : ']';
        json **tail = &j->child;
        s->p++;
        jskip(s);
        if (s->p < s->end && *s->p == close) { s->p++; return j; }
        for (;;) {
            char *key = NULL;
            if (j->type == J_OBJ) {
                jskip(s);
                if (!(key = jstring(s))) goto bad;
                jskip(s);
                if (s->p >= s->end || *s->p != ':') { free(key); goto bad; }
                s->p++;
            }
            json *item = jvalue(s, depth + 1);
            if (!item) { free(key); goto bad; }
            item->key = key;
            *tail = item;
            tail = &item->next;
            jskip(s);
            if (s->p < s->end && *s->p == ',') { s->p++; continue; }
            if (s->p < s->end && *s->p == close) { s->p++; return j; }
            goto bad;
        }
    } else if (s->end - s->p >= 4 && !strncmp(s->p, "true", 4)) {
        j->type = J_BOOL; j->boolean = 1; s->p += 4;
    } else if (s->end - s->p >= 5 && !strncmp(s->p, "false", 5)) {
        j->type = J_BOOL; s->p += 5;
    } else if (s->end - s->p >= 4 && !strncmp(s->p, "null", 4)) {
        j->type = J_NULL; s->p += 4;
    } else {
        char buf[64];
        size_t n = 0;
        while (s->p + n < s->end && n < sizeof buf - 1 && s->p[n] && strchr("+-0123456789.eE", s->p[n]))
            n++;
        if (!n) goto bad;
        memcpy(buf, s->p, n);
        buf[n] = '\0';
        j->type = J_NUM;
        j->num = strtod(buf, NULL);
        s->p += n;
    }
    return j;
bad:
    jfree(j);
    return NULL;
}

static json *jparse(const char *data, size_t len) {
    jparser s = {data, data + len};
    json *j = jvalue(&s, 0);
    if (j && j->type != J_OBJ) { jfree(j); return NULL; }
    return j;
}

static json *jget(const json *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (json *m = obj->child; m; m = m->next)
        if (m->key && !strcmp(m->key, key)) return m;
    return NULL;
}

static const char *jstr(const json *obj, const char *key, const char *dflt) {
    json *v = jget(obj, key);
    return v && v->type == J_STR ? v->str : dflt;
}

static double jnum(const json *obj, const char *key, double dflt) {
    json *v = jget(obj, key);
    return v && v->type == J_NUM ? v->num : dflt;
}

/* ---- a small JSON writer ---------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static void bput(buf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) abort();
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void bprintf(buf_t *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    bput(b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void bstr(buf_t *b, const char *s) {
    bput(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { bput(b, "\\", 1); bput(b, s, 1); }
        else if (c < 0x20) bprintf(b, "\\u%04x", c);
        else bput(b, s, 1);
    }
    bput(b, "\"", 1);
}

/* ---- the channel ------------------------------------------------------------------ */

static int chan_fd = -1;
static pthread_mutex_t chan_lock = PTHREAD_MUTEX_INITIALIZER;
static char workspace[PATH_MAX];
static const char *cgroup_root;
/* Where the commands' cgroups are made: `<cgroup_root>/commands` when the memory
 * controller bounds them (setup_commands_cgroup), else cgroup_root itself. */
static char slots_root[PATH_MAX - 64];
static long commands_max_kib = -1; /* the commands cgroup's memory.max; -1: none */
static int commands_stat_fd = -1;  /* its memory.stat, read by memory_guard */
static int commands_events_fd = -1; /* its memory.events: "oom" counts its memory.max hit */

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            _exit(1); /* the host is gone */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Send one frame; `head` is the JSON object without its closing brace. A frame goes out
 * in as few writes as it can: each write to the port is one virtqueue buffer and one
 * notification of the host (a VM exit), so small frames are copied into one buffer. */
static void send_frame(buf_t *head, const void *payload, size_t plen) {
    bput(head, "}", 1);
    uint32_t jl = (uint32_t)head->len, pl = (uint32_t)plen;
    unsigned char hdr[8] = {jl >> 24, jl >> 16, jl >> 8, jl, pl >> 24, pl >> 16, pl >> 8, pl};
    buf_t frame = {0};
    bput(&frame, hdr, 8);
    bput(&frame, head->data, head->len);
    int joined = plen <= CHUNK;
    if (joined && plen) bput(&frame, payload, plen);
    pthread_mutex_lock(&chan_lock);
    write_all(chan_fd, frame.data, frame.len);
    if (!joined) write_all(chan_fd, payload, plen);
    pthread_mutex_unlock(&chan_lock);
    free(frame.data);
    free(head->data);
    head->data = NULL;
    head->len = head->cap = 0;
}

static void start(buf_t *b, const char *type, long rid) {
    bprintf(b, "{\"t\":\"%s\",\"id\":%ld", type, rid);
}

static void send_ok(long rid, const void *payload, size_t plen) {
    buf_t b = {0};
    start(&b, "ok", rid);
    send_frame(&b, payload, plen);
}

static void send_error(long rid, const char *kind, const char *fmt, ...) {
    char msg[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    buf_t b = {0};
    start(&b, "error", rid);
    bput(&b, ",\"kind\":", 8);
    bstr(&b, kind);
    bput(&b, ",\"message\":", 11);
    bstr(&b, msg);
    send_frame(&b, NULL, 0);
}

static int read_exact(int fd, char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- paths ------------------------------------------------------------------------ */

/* Resolve `rest` onto the resolved folder `out` like Python's os.path.realpath (not
 * strict): symlinks of existing components are followed, missing ones are kept as is. */
static int join_real(char *out, const char *rest, int depth) {
    if (depth > 40) return -1;
    char *copy = strdup(rest), *save = NULL;
    if (!copy) return -1;
    for (char *name = strtok_r(copy, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
        if (!strcmp(name, ".")) continue;
        if (!strcmp(name, "..")) {
            char *slash = strrchr(out, '/');
            if (slash && slash != out) *slash = '\0';
            else strcpy(out, "/");
            continue;
        }
        char cand[PATH_MAX];
        if (snprintf(cand, sizeof cand, "%s%s%s", out, strcmp(out, "/") ? "/" : "", name)
            >= (int)sizeof cand) { free(copy); return -1; }
        struct stat st;
        if (lstat(cand, &st) == 0 && S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(cand, target, sizeof target - 1);
            if (n < 0) { free(copy); return -1; }
            target[n] = '\0';
            if (target[0] == '/') strcpy(out, "/");
            if (join_real(out, target, depth + 1)) { free(copy); return -1; }
        } else {
            strcpy(out, cand);
        }
    }
    free(copy);
    return 0;
}

/* Full path of workspace-relative `path`; on refusal sends the error and returns -1. */
static int resolve(long rid, const char *path, int must_exist, char *full) {
    strcpy(full, path[0] == '/' ? "/" : workspace);
    size_t wl = strlen(workspace);
    if (join_real(full, path, 0)
        || (strcmp(full, workspace) && (strncmp(full, workspace, wl) || full[wl] != '/'))) {
        send_error(rid, "denied", "path '%s' is outside the workspace", path);
        return -1;
    }
    struct stat st;
    if (must_exist && stat(full, &st) != 0) {
        send_error(rid, "not_found", "no such file: %s", path);
        return -1;
    }
    return 0;
}

static int makedirs(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
    return 0;
}

/* ---- requests --------------------------------------------------------------------- */

static void do_put(long rid, const json *h, const char *payload, size_t plen) {
    char full[PATH_MAX], tmp[PATH_MAX + 16];
    const char *path = jstr(h, "path", "");
    if (resolve(rid, path, 0, full)) return;
    char *slash = strrchr(full, '/');
    if (slash && slash != full) {
        *slash = '\0';
        int bad = makedirs(full);
        *slash = '/';
        if (bad) { send_error(rid, "failed", "%s: %s", path, strerror(errno)); return; }
    }
    snprintf(tmp, sizeof tmp, "%s.swarm-tmp", full);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) { send_error(rid, "failed", "%s: %s", path, strerror(errno)); return; }
    for (size_t off = 0; off < plen;) {
        ssize_t w = write(fd, payload + off, plen - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int err = errno;
            close(fd);
            unlink(tmp);
            send_error(rid, "failed", "%s: %s", path, strerror(err));
            return;
        }
        off += (size_t)w;
    }
    close(fd);
    if (chmod(tmp, (mode_t)jnum(h, "mode", 0644)) || rename(tmp, full)) {
        send_error(rid, "failed", "%s: %s", path, strerror(errno));
        unlink(tmp);
        return;
    }
    send_ok(rid, NULL, 0);
}

static void do_get(long rid, const json *h) {
    char full[PATH_MAX];
    const char *path = jstr(h, "path", "");
    if (resolve(rid, path, 1, full)) return;
    struct stat st;
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st)) {
        send_error(rid, errno == ENOENT ? "not_found" : "failed", "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        send_error(rid, "failed", "IsADirectoryError('%s is a directory')", path);
        return;
    }
    buf_t data = {0};
    char chunk[CHUNK];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (data.len + (size_t)r > MAX_PAYLOAD) { /* the host would refuse the frame */
            close(fd);
            free(data.data);
            send_error(rid, "too_large", "%s: larger than %u bytes", path, MAX_PAYLOAD);
            return;
        }
        bput(&data, chunk, (size_t)r);
    }
    close(fd);
    send_ok(rid, data.data, data.len);
    free(data.data);
}

static void do_restored(long rid, const json *h, const char *payload, size_t plen) {
    if (plen) {
        int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            struct rand_pool_info *info = malloc(sizeof *info + plen);
            if (info) { /* credit the seed, then force the CRNG to reseed from it */
                info->entropy_count = (int)(plen * 8);
                info->buf_size = (int)plen;
                memcpy(info->buf, payload, plen);
                if (ioctl(fd, RNDADDENTROPY, info) || ioctl(fd, RNDRESEEDCRNG))
                    write_all(fd, payload, plen);
                free(info);
            }
            close(fd);
        }
    }
    json *t = jget(h, "time");
    if (t && t->type == J_NUM) {
        struct timespec ts = {(time_t)t->num, (long)((t->num - (double)(time_t)t->num) * 1e9)};
        clock_settime(CLOCK_REALTIME, &ts);
    }
    send_ok(rid, NULL, 0);
}

/* ---- exec ------------------------------------------------------------------------- */

typedef struct proc {
    long rid;
    pid_t pid;
    char cgroup[PATH_MAX];
    int out_of_memory; /* killed by memory_guard (set under procs_lock) */
    int memory_low;    /* memory was low while it ran (set under procs_lock) */
    long oom_kills;    /* its cgroup's memory.events oom_kill as it started; -1: none */
    long limit_ooms;   /* the commands cgroup's memory.events oom as it started; -1: none */
    struct proc *next;
} proc_t;

static proc_t *procs;
static pthread_mutex_t procs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t procs_added = PTHREAD_COND_INITIALIZER; /* wakes memory_guard */

static void kill_tree(pid_t pid, const char *cgroup) {
    if (cgroup[0]) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/cgroup.kill", cgroup);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1", 1) < 0) { /* older kernels: killpg below */ }
            close(fd);
        }
    }
    killpg(pid, SIGKILL);
}

/* Take an exec off the list `kill` requests look at (before its pid is reaped). */
static void forget(proc_t *me) {
    pthread_mutex_lock(&procs_lock);
    for (proc_t **pp = &procs; *pp; pp = &(*pp)->next)
        if (*pp == me) { *pp = me->next; break; }
    pthread_mutex_unlock(&procs_lock);
}

static void do_kill(long rid, const json *h) {
    long target = (long)jnum(h, "target", -1);
    pthread_mutex_lock(&procs_lock);
    for (proc_t *p = procs; p; p = p->next)
        if (p->rid == target) kill_tree(p->pid, p->cgroup);
    pthread_mutex_unlock(&procs_lock);
    send_ok(rid, NULL, 0);
}

/* ---- memory guard ----------------------------------------------------------------- */

/* The root filesystem is a squashfs: when the guest is nearly out of memory, the kernel
 * evicts the programs' own pages and reads them back over and over (thrashing) long
 * before its OOM killer runs; under TCG that lasted past a 120 s timeout. So while a
 * command runs, MemAvailable is read every GUARD_MS, and once it is below a twentieth of
 * MemTotal (between GUARD_MIN_KIB and GUARD_MAX_KIB) the command whose processes hold the
 * most resident memory (and at least that much) is killed whole, as earlyoom and
 * systemd-oomd do on a host. Memory no process maps (a memfd written to, pipe buffers,
 * tmpfs files) is nobody's resident memory: when the guest stays that low for GUARD_GRACE_MS
 * with no command over the floor, the command holding the most is killed anyway (its
 * files and pipes go with it), one at a time. Its exit is 137 with one line saying why;
 * so is a SIGKILL of a command (the kernel's OOM killer, first) while memory was low. */
#define GUARD_MS 50
#define GUARD_GRACE_MS 1000
#define GUARD_MIN_KIB (8L * 1024)
#define GUARD_MAX_KIB (128L * 1024)

/* Below this many KiB of MemAvailable the guest is low on memory: a twentieth of
 * MemTotal, between GUARD_MIN_KIB and GUARD_MAX_KIB. */
static long guard_floor_kib(long total_kib) {
    long floor = total_kib / 20;
    if (floor < GUARD_MIN_KIB) floor = GUARD_MIN_KIB;
    if (floor > GUARD_MAX_KIB) floor = GUARD_MAX_KIB;
    return floor;
}

static long meminfo_kib(const char *text, const char *key) {
    const char *at = strstr(text, key);
    return at ? strtol(at + strlen(key), NULL, 10) : -1;
}

/* Resident KiB of a process, -1 if it is gone. */
static long rss_kib(long pid) {
    char path[64], text[128];
    snprintf(path, sizeof path, "/proc/%ld/statm", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = '\0';
    long size = 0, resident = 0;
    if (sscanf(text, "%ld %ld", &size, &resident) != 2) return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Resident KiB of a command: every process of its cgroup, or its own process. */
static long command_kib(const proc_t *p) {
    if (!p->cgroup[0]) return rss_kib(p->pid);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/cgroup.procs", p->cgroup);
    FILE *f = fopen(path, "re");
    if (!f) return rss_kib(p->pid);
    long total = 0, pid;
    while (fscanf(f, "%ld", &pid) == 1) {
        long kib = rss_kib(pid);
        if (kib > 0) total += kib;
    }
    fclose(f);
    return total;
}

/* The value of `key` in a memory.stat text ("anon 1234\n..."; bytes), in KiB; 0 if absent. */
static long stat_kib(const char *text, const char *key) {
    size_t len = strlen(key);
    for (const char *line = text; line; line = strchr(line, '\n')) {
        if (*line == '\n') line++;
        if (!strncmp(line, key, len) && line[len] == ' ') return strtol(line + len + 1, NULL, 10) / 1024;
    }
    return 0;
}

/* KiB the commands cgroup can still take before its memory.max: the limit less what
 * cannot be reclaimed (anonymous memory and shmem: memfds, tmpfs files, SysV shared
 * memory; memory.stat gives bytes). LONG_MAX when there is no such cgroup. */
static long commands_headroom_kib(void) {
    if (commands_stat_fd < 0 || commands_max_kib < 0) return LONG_MAX;
    char text[8192];
    ssize_t n = pread(commands_stat_fd, text, sizeof text - 1, 0);
    if (n <= 0) return LONG_MAX;
    text[n] = '\0';
    return commands_max_kib - stat_kib(text, "anon") - stat_kib(text, "shmem");
}

static void *memory_guard(void *unused) {
    (void)unused;
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    char text[4096];
    int low_polls = 0; /* how many polls in a row found memory low */
    for (;;) {
        pthread_mutex_lock(&procs_lock);
        while (!procs) { low_polls = 0; pthread_cond_wait(&procs_added, &procs_lock); }
        pthread_mutex_unlock(&procs_lock);
        struct timespec pause = {0, GUARD_MS * 1000000L};
        nanosleep(&pause, NULL);
        ssize_t n = pread(fd, text, sizeof text - 1, 0);
        if (n <= 0) continue;
        text[n] = '\0';
        long total = meminfo_kib(text, "MemTotal:"), avail = meminfo_kib(text, "MemAvailable:");
        if (total <= 0 || avail < 0) continue;
        long floor = guard_floor_kib(total), headroom = commands_headroom_kib();
        if (headroom < avail) avail = headroom;
        if (avail >= floor) { low_polls = 0; continue; }
        low_polls++;
        pthread_mutex_lock(&procs_lock);
        proc_t *victim = NULL;
        /* a command holding less than the floor would not give enough back, unless no
         * process maps what fills the guest (then, after the grace, whoever holds most) */
        long most = low_polls * GUARD_MS >= GUARD_GRACE_MS ? -1 : floor - 1;
        for (proc_t *p = procs; p; p = p->next) {
            p->memory_low = 1;
            if (p->out_of_memory) { victim = NULL; most = LONG_MAX; break; } /* still dying */
            long kib = command_kib(p);
            if (kib > most) { most = kib; victim = p; }
        }
        if (victim) {
            victim->out_of_memory = 1;
            kill_tree(victim->pid, victim->cgroup);
            low_polls = 0;
        }
        pthread_mutex_unlock(&procs_lock);
    }
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    long rid;
    json *header;
    char *payload;
    size_t plen;
} request_t;

static void send_out(long rid, const char *stream, const char *data, size_t n) {
    buf_t b = {0};
    start(&b, "out", rid);
    bprintf(&b, ",\"stream\":\"%s\"", stream);
    send_frame(&b, data, n);
}

static void send_exit(long rid, int code, int timed_out, double started) {
    buf_t b = {0};
    start(&b, "exit", rid);
    bprintf(&b, ",\"code\":%d,\"timed_out\":%s,\"duration_ms\":%ld", code,
            timed_out ? "true" : "false", (long)((now() - started) * 1000));
    send_frame(&b, NULL, 0);
}

/* Writes `value` to `<dir>/<name>` (a cgroup control file); 0, or -1 with errno. */
static int write_file(const char *dir, const char *name, const char *value) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t w = write(fd, value, strlen(value));
    int saved = errno;
    close(fd);
    errno = saved;
    return w < 0 ? -1 : 0;
}

/* Exec cgroups are kept and reused: making and removing one costs ~1 ms of guest time
 * under TCG (controller state allocated, then freed through workqueues and RCU), while
 * moving a new process into an existing one costs next to nothing. A slot is free
 * again once its last process is gone. */
typedef struct {
    char path[PATH_MAX];
    int events_fd;  /* its cgroup.events: "populated 0" once empty */
    int procs_fd;   /* its cgroup.procs, open for writing: a child writes "0" to join */
    long pids_max;  /* what its pids.max was last set to; -2: never set */
    int memory_events_fd; /* its memory.events, or -1 without the memory controller */
    int busy;
} slot_t;

/* The count on the line `key` of a memory.events file ("low 0\nhigh 0\nmax 0\noom 0\n
 * oom_kill 0\n..."), or -1 (no such file or line). */
static long events_count(int fd, const char *key) {
    char text[512], line[32];
    ssize_t n = fd < 0 ? -1 : pread(fd, text + 1, sizeof text - 2, 0);
    if (n <= 0) return -1;
    text[0] = '\n';
    text[n + 1] = '\0';
    int len = snprintf(line, sizeof line, "\n%s ", key);
    const char *at = strstr(text, line);
    return at ? strtol(at + len, NULL, 10) : -1;
}

/* How many of a slot's processes an OOM killer has killed (memory.events oom_kill: the
 * kernel's global OOM killer counts there too), or -1 without the memory controller. */
static long oom_kills(const slot_t *slot) {
    return events_count(slot->memory_events_fd, "oom_kill");
}

#define MAX_SLOTS 256
static slot_t *slots[MAX_SLOTS];
static int nslots;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

static slot_t *take_slot(void) {
    slot_t *slot = NULL;
    pthread_mutex_lock(&slots_lock);
    for (int k = 0; k < nslots && !slot; k++)
        if (!slots[k]->busy) slot = slots[k];
    if (!slot && nslots < MAX_SLOTS && (slot = calloc(1, sizeof *slot))) {
        snprintf(slot->path, sizeof slot->path, "%s/exec-%d", slots_root, nslots);
        char events[PATH_MAX + 16], procs_path[PATH_MAX + 16];
        snprintf(events, sizeof events, "%s/cgroup.events", slot->path);
        snprintf(procs_path, sizeof procs_path, "%s/cgroup.procs", slot->path);
        slot->events_fd = slot->procs_fd = -1;
        if ((mkdir(slot->path, 0755) && errno != EEXIST)
            || (slot->events_fd = open(events, O_RDONLY | O_CLOEXEC)) < 0
            || (slot->procs_fd = open(procs_path, O_WRONLY | O_CLOEXEC)) < 0) {
            if (slot->events_fd >= 0) close(slot->events_fd);
            free(slot);
            slot = NULL;
        } else {
            slot->pids_max = -2;
            slots[nslots++] = slot;
            slot->memory_events_fd = -1;
            if (commands_max_kib >= 0) { /* an OOM kill in it takes the whole command */
                write_file(slot->path, "memory.oom.group", "1");
                char memory_events[PATH_MAX + 16];
                snprintf(memory_events, sizeof memory_events, "%s/memory.events", slot->path);
                slot->memory_events_fd = open(memory_events, O_RDONLY | O_CLOEXEC);
            }
        }
    }
    if (slot) slot->busy = 1;
    pthread_mutex_unlock(&slots_lock);
    return slot;
}

static int populated(const slot_t *slot) {
    char events[256];
    ssize_t n = pread(slot->events_fd, events, sizeof events - 1, 0);
    if (n <= 0) return 1;
    events[n] = '\0';
    return strstr(events, "populated 0") == NULL;
}

/* Give a slot back once its last process is gone (they were killed with the command;
 * waits on cgroup.events, no polling). A wait runs after the exit frame is sent, so it
 * never delays a reply. A slot that does not empty stays taken. */
static void release_slot(slot_t *slot) {
    double until = now() + 10;
    while (populated(slot) && now() < until) {
        struct pollfd p = {slot->events_fd, POLLPRI, 0};
        poll(&p, 1, (int)((until - now()) * 1000) + 1);
    }
    if (populated(slot)) return;
    pthread_mutex_lock(&slots_lock);
    slot->busy = 0;
    pthread_mutex_unlock(&slots_lock);
}

/* The common case: the slot is empty as soon as the command's process is reaped, and is
 * given back before the exit is sent, so the next command finds it free. */
static slot_t *release_if_empty(slot_t *slot) {
    if (!slot || populated(slot)) return slot;
    release_slot(slot);
    return NULL;
}

/* pids.max of the slot: the pids controller bounds root too (RLIMIT_NPROC does not). */
static void set_pids_max(slot_t *slot, long nproc) {
    if (nproc < 0) nproc = -1;
    if (slot->pids_max == nproc) return;
    char path[PATH_MAX + 16], value[32];
    snprintf(path, sizeof path, "%s/pids.max", slot->path);
    int len = nproc < 0 ? snprintf(value, sizeof value, "max") : snprintf(value, sizeof value, "%ld", nproc);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { if (write(fd, value, (size_t)len) < 0) {} close(fd); }
    slot->pids_max = nproc;
}

/* Everything the child needs, prepared by the parent: the child shares the parent's
 * memory (CLONE_VM | CLONE_VFORK) until it execs, so it only makes system calls. */
typedef struct {
    char **argv, **envp, **cands;
    int ncand, in_fd, out_fd, err_fd;
    const char *cwd;
    int procs_fd; /* the exec's cgroup.procs, or -1 */
    long nofile, nproc;
    volatile int err; /* why no candidate could be executed; 0 when one was */
} spawn_t;

static int null_fd = -1; /* /dev/null, opened once at start: every exec's default stdin */

static int spawn_child(void *arg) {
    spawn_t *s = arg;
    signal(SIGPIPE, SIG_DFL); /* our own copy of the handlers (no CLONE_SIGHAND) */
    setsid();
    struct { int which; long value; } rl[2] = {{RLIMIT_NOFILE, s->nofile}, {RLIMIT_NPROC, s->nproc}};
    for (int k = 0; k < 2; k++) {
        struct rlimit cur;
        if (rl[k].value < 0 || getrlimit(rl[k].which, &cur)) continue;
        rlim_t want = (rlim_t)rl[k].value;
        if (cur.rlim_max != RLIM_INFINITY && want > cur.rlim_max) want = cur.rlim_max;
        struct rlimit lim = {want, want};
        setrlimit(rl[k].which, &lim);
    }
    if (s->procs_fd >= 0 && write(s->procs_fd, "0", 1) < 0) { /* stays in the agent's */ }
    int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); /* the agent's is -1000 */
    if (adj >= 0) { if (write(adj, "0", 1) < 0) { /* stays protected */ } close(adj); }
    int err = 0;
    if (dup2(s->in_fd, 0) < 0 || dup2(s->out_fd, 1) < 0 || dup2(s->err_fd, 2) < 0 || chdir(s->cwd) < 0) {
        err = errno;
    } else {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int k = 0; k < s->ncand; k++) {
            /* A missing candidate costs a lookup, not a failed execve (which builds a
             * whole new address space first). */
            if (access(s->cands[k], F_OK) == 0) execve(s->cands[k], s->argv, s->envp);
            if (err == 0 || (errno != ENOENT && errno != ENOTDIR)) err = errno;
        }
    }
    s->err = err ? err : ENOENT;
    _exit(127);
}

#define DRAIN_SECONDS 1.0 /* after the command's own process exits: read what is left */
#define SPAWN_STACK (64 * 1024)

static void exec_request(request_t *req) {
    long rid = req->rid;
    const json *h = req->header;
    json *argv_j = jget(h, "argv");
    int argc = 0;
    for (json *a = argv_j ? argv_j->child : NULL; a; a = a->next) argc++;
    if (!argv_j || argv_j->type != J_ARR || argc == 0) {
        send_error(rid, "failed", "exec needs a non-empty argv");
        return;
    }
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    int i = 0;
    for (json *a = argv_j->child; a; a = a->next) argv[i++] = a->type == J_STR ? a->str : "";
    /* Environment: what the host sent, with PATH and HOME defaulted. */
    json *env_j = jget(h, "env");
    int envc = 0;
    for (json *e = env_j && env_j->type == J_OBJ ? env_j->child : NULL; e; e = e->next) envc++;
    char **envp = calloc((size_t)envc + 3, sizeof *envp);
    const char *path_var = NULL;
    int has_home = 0, n = 0;
    for (json *e = env_j && env_j->type == J_OBJ ? env_j->child : NULL; e; e = e->next) {
        const char *val = e->type == J_STR ? e->str : "";
        if (asprintf(&envp[n], "%s=%s", e->key, val) < 0) abort();
        n++;
        if (!strcmp(e->key, "PATH")) path_var = val;
        if (!strcmp(e->key, "HOME")) has_home = 1;
    }
    if (!path_var) { envp[n++] = strdup("PATH=" GUEST_PATH); path_var = GUEST_PATH; }
    if (!has_home) envp[n++] = strdup("HOME=/root");
    /* Executable candidates, searched in the child's PATH (like subprocess). */
    int ncand = 0;
    char **cands;
    if (strchr(argv[0], '/')) {
        cands = calloc(2, sizeof *cands);
        cands[ncand++] = strdup(argv[0]);
    } else {
        cands = calloc(strlen(path_var) + 2, sizeof *cands);
        char *dirs = strdup(path_var), *save = NULL;
        for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save))
            if (asprintf(&cands[ncand++], "%s/%s", d, argv[0]) < 0) abort();
        free(dirs);
    }
    char cwd[PATH_MAX];
    const char *cwd_rel = jstr(h, "cwd", ".");
    proc_t *me = calloc(1, sizeof *me);
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, in_p[2] = {-1, -1};
    char *stack = NULL;
    slot_t *slot = NULL;
    struct stat st;
    if (resolve(rid, cwd_rel[0] ? cwd_rel : ".", 0, cwd)) goto done;
    if (stat(cwd, &st) || !S_ISDIR(st.st_mode)) {
        send_error(rid, "not_found", "working folder '%s' does not exist in the VM", cwd_rel);
        goto done;
    }
    me->rid = rid;
    json *limits = jget(h, "limits");
    long nofile = (long)jnum(limits, "nofile", -1), nproc = (long)jnum(limits, "nproc", -1);
    slot = cgroup_root ? take_slot() : NULL;
    me->oom_kills = me->limit_ooms = -1;
    if (slot) {
        snprintf(me->cgroup, sizeof me->cgroup, "%s", slot->path);
        set_pids_max(slot, nproc);
        me->oom_kills = oom_kills(slot);
        me->limit_ooms = events_count(commands_events_fd, "oom");
    }
    json *stdin_j = jget(h, "stdin");
    int want_stdin = stdin_j && stdin_j->type == J_BOOL && stdin_j->boolean;
    json *timeout_j = jget(h, "timeout");
    double started = now();
    double deadline = timeout_j && timeout_j->type == J_NUM ? started + timeout_j->num : -1;
    if (pipe2(out_p, O_CLOEXEC) || pipe2(err_p, O_CLOEXEC) || (want_stdin && pipe2(in_p, O_CLOEXEC))) {
        send_error(rid, "failed", "pipe: %s", strerror(errno));
        goto done;
    }
    spawn_t sp = {argv, envp, cands, ncand, want_stdin ? in_p[0] : null_fd, out_p[1], err_p[1],
                  cwd, slot ? slot->procs_fd : -1, nofile, nproc, 0};
    /* vfork-like: no copy of the agent's page tables; we resume once the child has
     * exec'd (or failed). Signals stay blocked meanwhile, as posix_spawn does. */
    stack = malloc(SPAWN_STACK);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t pid = stack ? clone(spawn_child, stack + SPAWN_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &sp) : -1;
    int spawn_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(out_p[1]); out_p[1] = -1;
    close(err_p[1]); err_p[1] = -1;
    if (in_p[0] >= 0) { close(in_p[0]); in_p[0] = -1; }
    if (pid < 0) {
        send_error(rid, "failed", "clone: %s", strerror(spawn_errno));
        goto done;
    }
    if (sp.err) { /* exec failed: report it like subprocess */
        int child_err = sp.err;
        waitpid(pid, NULL, 0);
        char msg[PATH_MAX];
        int len = snprintf(msg, sizeof msg, "%s: %s\n", argv[0], strerror(child_err));
        send_out(rid, "stderr", msg, len < (int)sizeof msg ? (size_t)len : sizeof msg - 1);
        send_exit(rid, child_err == EACCES || child_err == EPERM ? 126 : 127, 0, started);
        goto done;
    }
    me->pid = pid;
    pthread_mutex_lock(&procs_lock);
    me->next = procs;
    procs = me;
    pthread_cond_signal(&procs_added);
    pthread_mutex_unlock(&procs_lock);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int exited = 0, reaped = 0, timed_out = 0, killed = 0, status = 0;
    double drain_until = -1;
    size_t fed = 0;
    if (in_p[1] >= 0) {
        fcntl(in_p[1], F_SETFL, O_NONBLOCK);
        if (req->plen == 0) { close(in_p[1]); in_p[1] = -1; }
    }
    char *chunk = malloc(CHUNK);
    while (out_p[0] >= 0 || err_p[0] >= 0 || !exited) {
        if (exited && !reaped) {
            /* The command is over when its own process exits: what it left running is
             * killed now (before reaping, so its pid, the group's id, is not reused),
             * so a background job holding stdout does not hold the exec; what is
             * still in the pipes is read for at most DRAIN_SECONDS. */
            if (!killed && (!slot || populated(slot))) kill_tree(pid, me->cgroup);
            else if (!killed) killpg(pid, SIGKILL);
            killed = reaped = 1;
            forget(me);
            waitpid(pid, &status, 0);
            drain_until = now() + DRAIN_SECONDS;
        }
        if (drain_until >= 0 && now() >= drain_until) break;
        struct pollfd fds[4];
        int nfds = 0, idx_out = -1, idx_err = -1, idx_in = -1, idx_pid = -1;
        if (out_p[0] >= 0) { idx_out = nfds; fds[nfds++] = (struct pollfd){out_p[0], POLLIN, 0}; }
        if (err_p[0] >= 0) { idx_err = nfds; fds[nfds++] = (struct pollfd){err_p[0], POLLIN, 0}; }
        if (in_p[1] >= 0) { idx_in = nfds; fds[nfds++] = (struct pollfd){in_p[1], POLLOUT, 0}; }
        if (!exited && pidfd >= 0) { idx_pid = nfds; fds[nfds++] = (struct pollfd){pidfd, POLLIN, 0}; }
        double until = drain_until >= 0 ? drain_until : (deadline >= 0 && !killed ? deadline : -1);
        int wait_ms = -1;
        if (until >= 0) {
            double left = until - now();
            wait_ms = left <= 0 ? 0 : (int)(left * 1000) + 1;
        }
        if (!exited && pidfd < 0 && (wait_ms < 0 || wait_ms > 50))
            wait_ms = 50; /* no pidfd (old kernel): poll the child */
        int ready = poll(fds, (nfds_t)nfds, wait_ms);
        if (ready < 0 && errno != EINTR) break;
        if (deadline >= 0 && !killed && now() >= deadline) {
            /* Past the deadline with the command still alive. */
            timed_out = killed = 1;
            kill_tree(pid, me->cgroup);
        }
        siginfo_t si = {0};
        if (!exited && pidfd < 0 && !waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT)
            && si.si_pid == pid)
            exited = 1;
        if (ready <= 0) continue;
        int pipes[2] = {idx_out, idx_err};
        int *fdp[2] = {&out_p[0], &err_p[0]};
        const char *names[2] = {"stdout", "stderr"};
        for (int k = 0; k < 2; k++) {
            if (pipes[k] < 0 || !fds[pipes[k]].revents) continue;
            ssize_t r = read(*fdp[k], chunk, CHUNK);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { close(*fdp[k]); *fdp[k] = -1; continue; }
            send_out(rid, names[k], chunk, (size_t)r);
        }
        if (idx_in >= 0 && fds[idx_in].revents) {
            ssize_t w = write(in_p[1], req->payload + fed, req->plen - fed);
            if (w > 0) fed += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || fed >= req->plen) {
                close(in_p[1]);
                in_p[1] = -1;
            }
        }
        if (idx_pid >= 0 && fds[idx_pid].revents) exited = 1; /* a zombie until reaped above */
    }
    free(chunk);
    if (!reaped) {
        forget(me);
        waitpid(pid, &status, 0);
    }
    if (pidfd >= 0) close(pidfd);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    /* the kernel's OOM killer acted in the command's own cgroup: either the commands
     * cgroup reached its memory.max (its "oom" count rose), or the whole guest ran out
     * (the global OOM killer: memory the cgroup is not charged for, such as pipe and
     * socket buffers on a kernel without kernel-memory accounting, the tiny image's) */
    long kills = me->oom_kills >= 0 && slot ? oom_kills(slot) : -1;
    int oom_killed = kills > me->oom_kills && me->oom_kills >= 0;
    long limit_ooms = oom_killed ? events_count(commands_events_fd, "oom") : -1;
    int capped = oom_killed && limit_ooms > me->limit_ooms && me->limit_ooms >= 0;
    slot = release_if_empty(slot);
    /* (forget() above: no lock needed to read the guard's marks) */
    if (!timed_out
        && (me->out_of_memory || oom_killed || (code == 128 + SIGKILL && me->memory_low))) {
        static const char guard[] =
            "\nswarm-engine: the step ran out of memory: the VM's memory was nearly all used"
            " (MemAvailable under a twentieth of MemTotal), and the command holding the most"
            " was killed; it fails with exit code 137 (raise memory_mb, or use less)\n";
        static const char kernel[] =
            "\nswarm-engine: the step ran out of memory: the VM's memory was all used (kernel"
            " memory such as pipe and socket buffers counts too), and the kernel killed the"
            " command; it fails with exit code 137 (raise memory_mb, or use less)\n";
        static const char cap[] =
            "\nswarm-engine: the step ran out of memory: the commands used all the memory the"
            " VM gives them (its memory less a reserve for the guest), and the kernel killed"
            " the command; it fails with exit code 137 (raise memory_mb, or use less)\n";
        if (me->out_of_memory) send_out(rid, "stderr", guard, sizeof guard - 1);
        else if (capped) send_out(rid, "stderr", cap, sizeof cap - 1);
        else send_out(rid, "stderr", kernel, sizeof kernel - 1);
        code = 137;
    }
    send_exit(rid, timed_out ? 124 : code, timed_out, started);
done:
    if (slot) release_slot(slot);
    for (int k = 0; k < 2; k++) {
        int fds2[3] = {out_p[k], err_p[k], in_p[k]};
        for (int m = 0; m < 3; m++) if (fds2[m] >= 0) close(fds2[m]);
    }
    for (int k = 0; k < n; k++) free(envp[k]);
    for (int k = 0; k < ncand; k++) free(cands[k]);
    free(stack);
    free(envp);
    free(cands);
    free(argv);
    free(me);
}

/* Execs run on worker threads that wait for the next one when done: waking an idle
 * worker costs less than starting a thread for each command. */
typedef struct job {
    request_t *req;
    struct job *next;
} job_t;

static job_t *jobs, **jobs_tail = &jobs;
static int idle_workers;
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_ready = PTHREAD_COND_INITIALIZER;

static void *exec_worker(void *started_for_a_job) {
    int busy = started_for_a_job != NULL; /* the job that made it is counted as taken */
    for (;;) {
        pthread_mutex_lock(&jobs_lock);
        if (!busy) idle_workers++;
        busy = 0;
        while (!jobs) pthread_cond_wait(&jobs_ready, &jobs_lock);
        job_t *job = jobs;
        if (!(jobs = job->next)) jobs_tail = &jobs;
        pthread_mutex_unlock(&jobs_lock);
        request_t *req = job->req;
        free(job);
        exec_request(req);
        jfree(req->header);
        free(req->payload);
        free(req);
    }
    return NULL;
}

/* Queue an exec for a worker, starting one if none is idle; 0 on success. */
static int start_exec(request_t *req, const pthread_attr_t *attr) {
    job_t *job = malloc(sizeof *job);
    if (!job) return -1;
    *job = (job_t){req, NULL};
    pthread_mutex_lock(&jobs_lock);
    int ok = 1;
    if (idle_workers > 0) {
        idle_workers--; /* one idle worker is this job's, even before it wakes up */
    } else {
        pthread_t th;
        ok = pthread_create(&th, attr, exec_worker, job) == 0;
    }
    if (ok) {
        *jobs_tail = job;
        jobs_tail = &job->next;
        pthread_cond_signal(&jobs_ready);
    }
    pthread_mutex_unlock(&jobs_lock);
    if (!ok) free(job);
    return ok ? 0 : -1;
}

/* ---- main ------------------------------------------------------------------------- */

static const char *find_port(void) {
    static char dev[PATH_MAX];
    const char *base = "/sys/class/virtio-ports";
    for (int tries = 0; tries < 500; tries++) {
        DIR *d = opendir(base);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                if (e->d_name[0] == '.') continue;
                char path[PATH_MAX], name[64] = "";
                snprintf(path, sizeof path, "%s/%s/name", base, e->d_name);
                FILE *f = fopen(path, "re");
                if (!f) continue;
                if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = '\0';
                fclose(f);
                if (!strcmp(name, PORT_NAME)) {
                    snprintf(dev, sizeof dev, "/dev/%s", e->d_name);
                    closedir(d);
                    return dev;
                }
            }
            closedir(d);
        }
        usleep(10000);
    }
    fprintf(stderr, "swarm-agent: no virtio port named %s\n", PORT_NAME);
    exit(1);
}

/* With the memory controller: `<cgroup_root>/commands`, the parent of every command's
 * cgroup, with memory.max = what the guest has available now (at boot, before any
 * command) less a reserve of twice the guard's floor (at least half of it is left to the
 * commands). Memory the commands fill faster than memory_guard acts (a memfd written in a
 * loop) then meets the limit: the kernel's OOM killer kills inside `commands`, and the
 * agent and the guest keep their memory. Without this, such a fill once left the kernel
 * with nothing it may kill (the agent is -1000) and the guest panicked ("System is
 * deadlocked on memory"). Without the controller, the commands' cgroups are made in
 * cgroup_root as before and memory_guard alone bounds them. */
static void setup_commands_cgroup(void) {
    char path[sizeof slots_root], text[4096];
    if (write_file(cgroup_root, "cgroup.subtree_control", "+memory")) return;
    snprintf(path, sizeof path, "%s/commands", cgroup_root);
    if (mkdir(path, 0755) && errno != EEXIST) return;
    if (write_file(path, "cgroup.subtree_control", "+pids")) { /* no pids controller */ }
    if (write_file(path, "cgroup.subtree_control", "+memory")) return;
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
    if (fd >= 0) close(fd);
    if (n <= 0) return;
    text[n] = '\0';
    long total = meminfo_kib(text, "MemTotal:"), avail = meminfo_kib(text, "MemAvailable:");
    if (total <= 0 || avail <= 0) return;
    long max = avail - 2 * guard_floor_kib(total);
    if (max < avail / 2) max = avail / 2;
    char value[32];
    snprintf(value, sizeof value, "%ld", max * 1024);
    if (write_file(path, "memory.max", value)) return;
    char stat_path[PATH_MAX + 16];
    snprintf(stat_path, sizeof stat_path, "%s/memory.stat", path);
    commands_stat_fd = open(stat_path, O_RDONLY | O_CLOEXEC);
    snprintf(stat_path, sizeof stat_path, "%s/memory.events", path);
    commands_events_fd = open(stat_path, O_RDONLY | O_CLOEXEC);
    snprintf(slots_root, sizeof slots_root, "%s", path);
    commands_max_kib = max;
}

int main(int argc, char **argv) {
    const char *ws = "/workspace", *port = NULL, *cg = "/sys/fs/cgroup";
    int fd = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--workspace")) ws = argv[i + 1];
        else if (!strcmp(argv[i], "--cgroup-root")) cg = argv[i + 1];
        else if (!strcmp(argv[i], "--fd")) fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--port")) port = argv[i + 1];
    }
    signal(SIGPIPE, SIG_IGN);
    int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); /* the kernel's OOM */
    if (adj >= 0) { if (write(adj, "-1000", 5) < 0) { /* killer spares the agent */ } close(adj); }
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/cgroup.controllers", cg);
    cgroup_root = strcmp(cg, "none") && access(probe, F_OK) == 0 ? cg : NULL;
    if (cgroup_root) { /* once: each exec's cgroup gets pids.max (if the kernel has it) */
        snprintf(slots_root, sizeof slots_root, "%s", cgroup_root);
        if (write_file(cgroup_root, "cgroup.subtree_control", "+pids")) { /* no pids controller */ }
        setup_commands_cgroup();
    }
    if (cgroup_root) { /* the first slot is made at boot (and so is in the snapshot) */
        slot_t *first = take_slot();
        if (first) release_slot(first);
    }
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) { perror("swarm-agent: /dev/null"); return 1; }
    if (fd < 0) fd = open(port ? port : find_port(), O_RDWR | O_CLOEXEC);
    if (fd < 0) { perror("swarm-agent: cannot open the port"); return 1; }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    chan_fd = fd;
    makedirs(ws);
    if (!realpath(ws, workspace)) { perror("swarm-agent: workspace"); return 1; }
    buf_t hello = {0};
    bprintf(&hello, "{\"t\":\"ready\",\"version\":%d,\"pid\":%d,\"agent\":\"c\"",
            PROTOCOL_VERSION, (int)getpid());
    send_frame(&hello, NULL, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1024 * 1024); /* path resolution recurses */
    pthread_t guard;
    if (pthread_create(&guard, &attr, memory_guard, NULL)) { /* no guard: the kernel's OOM */ }
    for (;;) {
        unsigned char hdr[8];
        if (read_exact(fd, (char *)hdr, 8)) return 0;
        uint32_t jl = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        uint32_t pl = (uint32_t)hdr[4] << 24 | (uint32_t)hdr[5] << 16 | (uint32_t)hdr[6] << 8 | hdr[7];
        if (jl > MAX_JSON || pl > MAX_PAYLOAD) {
            fprintf(stderr, "swarm-agent: frame too large (%u, %u)\n", jl, pl);
            return 1;
        }
        char *body = malloc((size_t)jl + 1), *payload = malloc(pl ? pl : 1);
        if (!body || !payload || read_exact(fd, body, jl) || read_exact(fd, payload, pl)) return 0;
        json *h = jparse(body, jl);
        free(body);
        if (!h) { fprintf(stderr, "swarm-agent: bad frame\n"); return 1; }
        long rid = (long)jnum(h, "id", 0);
        const char *kind = jstr(h, "t", "");
        int keep = 0;
        if (!strcmp(kind, "exec")) {
            request_t *req = malloc(sizeof *req);
            *req = (request_t){rid, h, payload, pl};
            if (start_exec(req, &attr) == 0) keep = 1;
            else { free(req); send_error(rid, "failed", "cannot start a thread"); }
        } else if (!strcmp(kind, "put")) do_put(rid, h, payload, pl);
        else if (!strcmp(kind, "get")) do_get(rid, h);
        else if (!strcmp(kind, "ping")) send_ok(rid, payload, pl);
        else if (!strcmp(kind, "kill")) do_kill(rid, h);
        else if (!strcmp(kind, "restored")) do_restored(rid, h, payload, pl);
        else if (!strcmp(kind, "shutdown")) { send_ok(rid, NULL, 0); return 0; }
        else send_error(rid, "protocol", "%s?", kind);
        if (!keep) { jfree(h); free(payload); }
    }
}
