/* Mapped input files and atomically published output files. */
#define _GNU_SOURCE /* fallocate(2) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"

/* ---- inputs --------------------------------------------------------------------------------- */

/* The mappings the SIGBUS handler knows. A slot is published by storing `begin` last (release) and
 * retired by clearing it first, so the handler never reads a half-filled slot. Mappings beyond
 * the table still work; a fault in one of them is simply not caught. */
#define WATCHED_MAX 256
#define DAMAGED_PATH_MAX 1024

static struct watched_mapping {
    uintptr_t begin; /* 0: free */
    size_t size;
    const char *path;
    uint64_t opened_at; /* damage_count when it was opened */
} watched[WATCHED_MAX];
static pthread_mutex_t watched_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;
static struct sigaction sigbus_previous;
static uintptr_t page_bytes = 4096;

static uint64_t damage_count;                 /* faults turned into zeros, ever */
static char damaged_path[DAMAGED_PATH_MAX];   /* the file of the latest one */

static void pass_sigbus_on(int sig, siginfo_t *info, void *context) {
    if ((sigbus_previous.sa_flags & SA_SIGINFO) && sigbus_previous.sa_sigaction) {
        sigbus_previous.sa_sigaction(sig, info, context);
    } else if (sigbus_previous.sa_handler != SIG_DFL && sigbus_previous.sa_handler != SIG_IGN) {
        sigbus_previous.sa_handler(sig);
    } else {
        /* Returning re-runs the faulting access, which now ends the process the default way. */
        signal(SIGBUS, SIG_DFL);
    }
}

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    const int saved_errno = errno; /* the interrupted code's, which mmap may overwrite */
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (size_t i = 0; i < WATCHED_MAX; i++) {
        uintptr_t begin = __atomic_load_n(&watched[i].begin, __ATOMIC_ACQUIRE);
        if (!begin || addr < begin || addr - begin >= watched[i].size) continue;
        /* mmap is a plain system call on Linux, safe here although POSIX does not list it; the
         * zero page takes the place of the lost file page, and munmap at close removes it with
         * the rest of the mapping. */
        void *page = (void *)(addr & ~(page_bytes - 1));
        if (mmap(page, page_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
            MAP_FAILED) {
            break;
        }
        const char *path = watched[i].path;
        size_t n = 0;
        while (path[n] && n + 1 < DAMAGED_PATH_MAX) {
            damaged_path[n] = path[n];
            n++;
        }
        damaged_path[n] = '\0';
        __atomic_add_fetch(&damage_count, 1, __ATOMIC_RELEASE);
        errno = saved_errno;
        return;
    }
    errno = saved_errno;
    pass_sigbus_on(sig, info, context);
}

static void install_sigbus_handler(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) page_bytes = (uintptr_t)page;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &sigbus_previous);
}

static int watch_mapping(const void *data, size_t size, const char *path) {
    pthread_once(&sigbus_once, install_sigbus_handler);
    int slot = 0;
    pthread_mutex_lock(&watched_lock);
    for (size_t i = 0; i < WATCHED_MAX; i++) {
        if (watched[i].begin) continue;
        watched[i].size = size;
        watched[i].path = path;
        watched[i].opened_at = __atomic_load_n(&damage_count, __ATOMIC_ACQUIRE);
        __atomic_store_n(&watched[i].begin, (uintptr_t)data, __ATOMIC_RELEASE);
        slot = (int)i + 1;
        break;
    }
    pthread_mutex_unlock(&watched_lock);
    return slot;
}

static void unwatch_mapping(int slot) {
    if (slot <= 0) return;
    pthread_mutex_lock(&watched_lock);
    __atomic_store_n(&watched[slot - 1].begin, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&watched_lock);
}

/* The damage count from which damage matters to an output opened at `own_mark`: an output depends
 * on every input still open, which may have been read before the output was opened. */
static uint64_t damage_mark(uint64_t own_mark) {
    uint64_t mark = own_mark;
    pthread_mutex_lock(&watched_lock);
    for (size_t i = 0; i < WATCHED_MAX; i++) {
        if (watched[i].begin && watched[i].opened_at < mark) mark = watched[i].opened_at;
    }
    pthread_mutex_unlock(&watched_lock);
    return mark;
}

static qw_status check_damage_since(uint64_t mark, const char *output, qw_error *err) {
    if (__atomic_load_n(&damage_count, __ATOMIC_ACQUIRE) <= mark) return QW_OK;
    return qw_fail(err, QW_ERR_IO,
                   "%s: not written: the input %s changed on disk while it was being read (it "
                   "shrank, or reading it failed); run again once it is complete",
                   output, damaged_path);
}

qw_status qw_mapped_check_inputs(const char *output, qw_error *err) {
    return check_damage_since(damage_mark(__atomic_load_n(&damage_count, __ATOMIC_ACQUIRE)),
                              output, err);
}

qw_status qw_mapped_open(const char *path, qw_mapped *out, qw_error *err) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        qw_status st = errno == ENOENT ? QW_ERR_NOT_FOUND : QW_ERR_IO;
        return qw_fail(err, st, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return qw_fail(err, QW_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return qw_fail(err, QW_ERR_INVALID_ARG, "%s: not a regular file", path);
    }
    out->path = qw_strdup(path);
    if (!out->path) {
        close(fd);
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    out->size = (size_t)sb.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            qw_mapped_close(out);
            return qw_fail(err, QW_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        out->data = p;
        out->owns_map = true;
        out->watch_slot = watch_mapping(p, out->size, out->path);
    }
    close(fd);
    return QW_OK;
}

qw_status qw_mapped_wrap(const void *data, size_t size, const char *label, qw_mapped *out,
                         qw_error *err) {
    memset(out, 0, sizeof *out);
    out->data = data;
    out->size = size;
    out->path = qw_strdup(label ? label : "<memory>");
    if (!out->path) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    return QW_OK;
}

void qw_mapped_close(qw_mapped *m) {
    if (!m) return;
    unwatch_mapping(m->watch_slot);
    if (m->owns_map && m->data) munmap((void *)m->data, m->size);
    qw_free(m->path);
    memset(m, 0, sizeof *m);
}

void qw_mapped_release(const void *data, size_t bytes) {
    static long page;
    if (!page) page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    uintptr_t begin = ((uintptr_t)data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t end = ((uintptr_t)data + bytes) & ~((uintptr_t)page - 1);
    /* Only whole pages inside the range: neighbours may still be in use by other tensors. */
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
}

qw_status qw_file_read_all(const char *path, size_t max_bytes, char **out, size_t *out_len,
                           qw_error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        qw_status st = errno == ENOENT ? QW_ERR_NOT_FOUND : QW_ERR_IO;
        return qw_fail(err, st, "%s: cannot open: %s", path, strerror(errno));
    }
    qw_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > max_bytes) {
            fclose(f);
            qw_buf_free(&b);
            return qw_fail(err, QW_ERR_CORRUPT, "%s: larger than the %zu bytes allowed", path,
                           max_bytes);
        }
        if (!qw_buf_append(&b, chunk, n)) {
            fclose(f);
            qw_buf_free(&b);
            return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        qw_buf_free(&b);
        return qw_fail(err, QW_ERR_IO, "%s: read error", path);
    }
    if (!b.data && !qw_buf_append(&b, "", 0)) {
        return qw_fail(err, QW_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    *out = b.data;
    if (out_len) *out_len = b.len;
    return QW_OK;
}

bool qw_path_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

bool qw_path_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool qw_path_is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

char *qw_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir);
    if (n > 0 && dir[n - 1] == '/') return qw_sprintf("%s%s", dir, name);
    return qw_sprintf("%s/%s", dir, name);
}

qw_status qw_mkdir_p(const char *path, qw_error *err) {
    char *p = qw_strdup(path);
    if (!p) return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char saved = *s;
            *s = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                qw_status st = qw_fail(err, QW_ERR_IO, "%s: cannot create directory: %s", p,
                                       strerror(errno));
                qw_free(p);
                return st;
            }
            *s = saved;
            if (saved == '\0') break;
        }
    }
    qw_free(p);
    if (!qw_path_is_dir(path)) {
        return qw_fail(err, QW_ERR_IO, "%s: exists and is not a directory", path);
    }
    return QW_OK;
}

char *qw_path_basename(const char *path) {
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') end--;
    size_t begin = end;
    while (begin > 0 && path[begin - 1] != '/') begin--;
    return qw_strndup(path + begin, end - begin);
}

/* ---- outputs -------------------------------------------------------------------------------- */

/* Writes are double-buffered: the caller fills one buffer while a writer thread hands the other
 * to the kernel, so quantization and I/O overlap instead of taking turns. */
#define OUTPUT_BUFFER_BYTES (8u << 20)
#define TEMP_MARK ".qwodel-tmp-"

struct qw_output {
    int fd;
    char *final_path;
    char *temp_path;
    uint8_t *buffers[2];
    int active;             /* the buffer the caller fills */
    size_t buffered;        /* bytes in it */
    uint64_t offset;
    uint64_t reserved;      /* bytes preallocated on disk */
    /* the writer thread */
    bool threaded;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    const uint8_t *pending; /* buffer handed to the writer; NULL when it is idle */
    size_t pending_bytes;
    bool stop;
    int write_errno;        /* first write error, reported by the next call */
    uint64_t damage_mark;   /* damage to inputs after this mark keeps the file from publishing */
};

/* "<dir>/.<name>.qwodel-tmp-" : the prefix every temporary file of final_path starts with. */
static char *temp_prefix(const char *final_path) {
    const char *slash = strrchr(final_path, '/');
    if (!slash) return qw_sprintf("." "%s" TEMP_MARK, final_path);
    return qw_sprintf("%.*s/.%s" TEMP_MARK, (int)(slash - final_path), final_path, slash + 1);
}

/* write(2) until done; 0 or an errno value. */
static int write_all(int fd, const uint8_t *data, size_t bytes) {
    while (bytes > 0) {
        ssize_t n = write(fd, data, bytes);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        data += n;
        bytes -= (size_t)n;
    }
    return 0;
}

static void *writer_main(void *p) {
    qw_output *o = p;
    pthread_mutex_lock(&o->mutex);
    for (;;) {
        while (!o->pending && !o->stop) pthread_cond_wait(&o->cond, &o->mutex);
        if (!o->pending) break;
        const uint8_t *data = o->pending;
        size_t bytes = o->pending_bytes;
        bool failed = o->write_errno != 0; /* after an error, drop the rest */
        pthread_mutex_unlock(&o->mutex);
        int e = failed ? 0 : write_all(o->fd, data, bytes);
        pthread_mutex_lock(&o->mutex);
        if (e && !o->write_errno) o->write_errno = e;
        o->pending = NULL;
        pthread_cond_broadcast(&o->cond);
    }
    pthread_mutex_unlock(&o->mutex);
    return NULL;
}

qw_status qw_fail_write(const char *path, int e, qw_error *err) {
    if (e == ENOSPC || e == EDQUOT) {
        return qw_fail(err, QW_ERR_IO, "%s: write failed: the disk is full (%s)", path,
                       strerror(e));
    }
    if (e == EFBIG) {
        return qw_fail(err, QW_ERR_IO, "%s: write failed: the file is larger than allowed (%s)",
                       path, strerror(e));
    }
    return qw_fail(err, QW_ERR_IO, "%s: write failed: %s", path, strerror(e));
}

static qw_status write_error(const qw_output *o, int e, qw_error *err) {
    return qw_fail_write(o->final_path, e, err);
}

qw_status qw_output_open(const char *final_path, qw_output **out, qw_error *err) {
    *out = NULL;
    qw_output *o = qw_calloc(1, sizeof *o);
    char *prefix = temp_prefix(final_path);
    if (!o || !prefix) {
        qw_free(o);
        qw_free(prefix);
        return qw_fail(err, QW_ERR_NO_MEMORY, "out of memory");
    }
    o->fd = -1;
    o->damage_mark = damage_mark(__atomic_load_n(&damage_count, __ATOMIC_ACQUIRE));
    o->final_path = qw_strdup(final_path);
    o->buffers[0] = qw_malloc(OUTPUT_BUFFER_BYTES);
    o->buffers[1] = qw_malloc(OUTPUT_BUFFER_BYTES);
    static unsigned counter;
    for (int attempt = 0; attempt < 100 && o->fd < 0; attempt++) {
        qw_free(o->temp_path);
        o->temp_path = qw_sprintf("%s%ld-%u", prefix, (long)getpid(),
                                  __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        if (!o->temp_path) break;
        o->fd = open(o->temp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (o->fd < 0 && errno != EEXIST) break;
    }
    qw_free(prefix);
    if (o->fd < 0 || !o->buffers[0] || !o->buffers[1]) {
        qw_status st = (!o->final_path || !o->buffers[0] || !o->buffers[1] || !o->temp_path)
                           ? qw_fail(err, QW_ERR_NO_MEMORY, "out of memory")
                           : qw_fail(err, QW_ERR_IO, "%s: cannot create: %s", o->temp_path,
                                     strerror(errno));
        qw_output_abort(o);
        return st;
    }
    pthread_mutex_init(&o->mutex, NULL);
    pthread_cond_init(&o->cond, NULL);
    /* Without a thread (it could not be created) writes simply happen inline. */
    o->threaded = pthread_create(&o->thread, NULL, writer_main, o) == 0;
    *out = o;
    return QW_OK;
}

qw_status qw_output_reserve(qw_output *o, uint64_t bytes, qw_error *err) {
    if (bytes <= o->reserved || bytes > (uint64_t)INT64_MAX) return QW_OK;
    int rc = fallocate(o->fd, 0, 0, (off_t)bytes);
    if (rc != 0) {
        /* Filesystems without fallocate are fine: the space is claimed as data arrives. */
        if (errno == ENOSPC || errno == EDQUOT) {
            return qw_fail(err, QW_ERR_IO, "%s: not enough disk space for %.1f MiB",
                           o->final_path, (double)bytes / (1024.0 * 1024.0));
        }
        return QW_OK;
    }
    o->reserved = bytes;
    return QW_OK;
}

/* Hands the active buffer to the writer (after it finished the previous one) and switches. */
static qw_status output_submit(qw_output *o, qw_error *err) {
    if (o->buffered == 0) return QW_OK;
    if (!o->threaded) {
        int e = write_all(o->fd, o->buffers[o->active], o->buffered);
        o->buffered = 0;
        return e ? write_error(o, e, err) : QW_OK;
    }
    pthread_mutex_lock(&o->mutex);
    while (o->pending) pthread_cond_wait(&o->cond, &o->mutex);
    int e = o->write_errno;
    if (!e) {
        o->pending = o->buffers[o->active];
        o->pending_bytes = o->buffered;
        pthread_cond_broadcast(&o->cond);
    }
    pthread_mutex_unlock(&o->mutex);
    if (e) return write_error(o, e, err);
    o->active ^= 1;
    o->buffered = 0;
    return QW_OK;
}

/* Waits for the writer to finish everything handed to it and stops it. */
static qw_status output_drain(qw_output *o, qw_error *err) {
    if (!o->threaded) return QW_OK;
    pthread_mutex_lock(&o->mutex);
    while (o->pending) pthread_cond_wait(&o->cond, &o->mutex);
    o->stop = true;
    pthread_cond_broadcast(&o->cond);
    int e = o->write_errno;
    pthread_mutex_unlock(&o->mutex);
    pthread_join(o->thread, NULL);
    o->threaded = false;
    pthread_mutex_destroy(&o->mutex);
    pthread_cond_destroy(&o->cond);
    return e ? write_error(o, e, err) : QW_OK;
}

qw_status qw_output_write(qw_output *o, const void *data, size_t bytes, qw_error *err) {
    const uint8_t *p = data;
    while (bytes > 0) {
        size_t room = OUTPUT_BUFFER_BYTES - o->buffered;
        size_t n = bytes < room ? bytes : room;
        memcpy(o->buffers[o->active] + o->buffered, p, n);
        o->buffered += n;
        o->offset += n;
        p += n;
        bytes -= n;
        if (o->buffered == OUTPUT_BUFFER_BYTES) QW_TRY(output_submit(o, err));
    }
    return QW_OK;
}

qw_status qw_output_write_zeros(qw_output *o, size_t bytes, qw_error *err) {
    static const uint8_t zeros[256];
    while (bytes > 0) {
        size_t n = bytes < sizeof zeros ? bytes : sizeof zeros;
        QW_TRY(qw_output_write(o, zeros, n, err));
        bytes -= n;
    }
    return QW_OK;
}

uint64_t qw_output_offset(const qw_output *o) { return o->offset; }

const char *qw_output_temp_path(const qw_output *o) { return o->temp_path; }

qw_status qw_output_commit(qw_output *o, qw_error *err) {
    qw_status st = output_submit(o, err);
    qw_status drained = output_drain(o, st == QW_OK ? err : NULL);
    if (st == QW_OK) st = drained;
    /* a reservation larger than what was written must not leave zeros at the end */
    if (st == QW_OK && o->reserved > o->offset && ftruncate(o->fd, (off_t)o->offset) != 0) {
        st = qw_fail(err, QW_ERR_IO, "%s: cannot set the file size: %s", o->final_path,
                     strerror(errno));
    }
    if (st == QW_OK) st = check_damage_since(o->damage_mark, o->final_path, err);
    if (st == QW_OK && fsync(o->fd) != 0 && errno != EINVAL) {
        st = qw_fail(err, QW_ERR_IO, "%s: sync failed: %s", o->final_path, strerror(errno));
    }
    if (st == QW_OK) {
        int rc = close(o->fd);
        o->fd = -1;
        if (rc != 0) {
            st = qw_fail(err, QW_ERR_IO, "%s: close failed: %s", o->final_path, strerror(errno));
        }
    }
    if (st == QW_OK && rename(o->temp_path, o->final_path) != 0) {
        st = qw_fail(err, QW_ERR_IO, "%s: cannot rename into place: %s", o->final_path,
                     strerror(errno));
    }
    if (st != QW_OK) {
        qw_output_abort(o);
        return st;
    }
    qw_free(o->temp_path);
    o->temp_path = NULL;
    qw_output_abort(o);
    return QW_OK;
}

void qw_output_abort(qw_output *o) {
    if (!o) return;
    if (o->threaded) {
        pthread_mutex_lock(&o->mutex);
        o->stop = true;
        o->write_errno = o->write_errno ? o->write_errno : ECANCELED; /* drop queued data */
        pthread_cond_broadcast(&o->cond);
        pthread_mutex_unlock(&o->mutex);
        pthread_join(o->thread, NULL);
        pthread_mutex_destroy(&o->mutex);
        pthread_cond_destroy(&o->cond);
    }
    if (o->fd >= 0) close(o->fd);
    if (o->temp_path) unlink(o->temp_path);
    qw_free(o->temp_path);
    qw_free(o->final_path);
    qw_free(o->buffers[0]);
    qw_free(o->buffers[1]);
    qw_free(o);
}

/* Removes the entries of `dir` named "<prefix><pid>..." whose writer `pid` is gone: what a killed
 * run left. A live process's entries, this one's included, are its work in progress. */
static void remove_dead_writers(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t prefix_len = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, prefix_len) != 0) continue;
        char *end = NULL;
        long pid = strtol(e->d_name + prefix_len, &end, 10);
        if (pid <= 0 || end == e->d_name + prefix_len) continue; /* not one of our names */
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM) continue;
        char *path = qw_path_join(dir, e->d_name);
        if (path) qw_dir_remove_tree(path);
        qw_free(path);
    }
    closedir(d);
}

/* Splits a path into its directory ("." for none) and last component, both allocated. */
static bool split_path(const char *path, char **dir, char **base) {
    const char *slash = strrchr(path, '/');
    *dir = slash ? qw_strndup(path, (size_t)(slash == path ? 1 : slash - path)) : qw_strdup(".");
    *base = qw_strdup(slash ? slash + 1 : path);
    if (*dir && *base) return true;
    qw_free(*dir);
    qw_free(*base);
    return false;
}

/* Removes the temporaries of dead writers next to final_path: "[.]<name>.qwodel-tmp-<pid>...",
 * hidden (a leading '.') for single files. */
static void clean_stale(const char *final_path, bool hidden) {
    char *dir, *base;
    if (!split_path(final_path, &dir, &base)) return;
    char *prefix = qw_sprintf("%s%s" TEMP_MARK, hidden ? "." : "", base);
    if (prefix) remove_dead_writers(dir, prefix);
    qw_free(prefix);
    qw_free(dir);
    qw_free(base);
}

void qw_output_clean_stale(const char *final_path) { clean_stale(final_path, true); }

/* ---- directory outputs ------------------------------------------------------------------------ */

char *qw_dir_temp_path(const char *final_path) {
    return qw_sprintf("%s" TEMP_MARK "%ld", final_path, (long)getpid());
}

void qw_dir_clean_stale(const char *final_path) { clean_stale(final_path, false); }

void qw_dir_remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *child = qw_path_join(path, e->d_name);
        if (child) qw_dir_remove_tree(child);
        qw_free(child);
    }
    closedir(d);
    rmdir(path);
}

qw_status qw_dir_publish(const char *tmp, const char *final, bool (*replaceable)(const char *dir),
                         const char *kind, qw_error *err) {
    QW_TRY(qw_mapped_check_inputs(final, err));
    struct stat sb;
    char *old = NULL;
    if (stat(final, &sb) == 0) {
        if (!replaceable(final)) {
            return qw_fail(err, QW_ERR_IO, "%s exists and is not %s: not replacing it", final,
                           kind);
        }
        old = qw_sprintf("%s.qwodel-old-%ld", final, (long)getpid());
        if (!old || rename(final, old) != 0) {
            qw_free(old);
            return qw_fail(err, QW_ERR_IO, "%s: cannot move the earlier output aside: %s", final,
                           strerror(errno));
        }
    }
    if (rename(tmp, final) != 0) {
        const int e = errno;
        if (old) rename(old, final);
        qw_free(old);
        return qw_fail(err, QW_ERR_IO, "%s: cannot rename the finished output into place: %s",
                       final, strerror(e));
    }
    if (old) qw_dir_remove_tree(old);
    qw_free(old);
    return QW_OK;
}
