/* core and file helpers: statuses, errors, the thread pool, buffers, output files. */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "file.h"
#include "json.h"
#include "pool.h"
#include "test.h"

TEST(every_status_has_a_name_message_and_class) {
    static const qw_status all[] = {
#define QW_TEST_STATUS_(name, value, cls, msg) name,
        QW_STATUS_MAP(QW_TEST_STATUS_)
#undef QW_TEST_STATUS_
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK(qw_status_name(all[i])[0] == 'Q');
        CHECK(strlen(qw_status_message(all[i])) > 3);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(qw_status_name(all[i]), qw_status_name(all[j])) != 0);
    }
    CHECK_EQ_STR(qw_status_name(QW_ERR_CORRUPT), "QW_ERR_CORRUPT");
    CHECK_EQ_STR(qw_status_name((qw_status)999), "QW_ERR_UNKNOWN");
    CHECK_EQ_INT(qw_status_class_of(QW_OK), QW_CLASS_OK);
    CHECK_EQ_INT(qw_status_class_of(QW_ERR_UNKNOWN_BACKEND), QW_CLASS_VALIDATION);
    CHECK_EQ_INT(qw_status_class_of(QW_ERR_UNSUPPORTED_ARCH), QW_CLASS_VALIDATION);
    CHECK_EQ_INT(qw_status_class_of(QW_ERR_FORMAT_NOT_SUPPORTED), QW_CLASS_FORMAT_NOT_SUPPORTED);
    CHECK_EQ_INT(qw_status_class_of(QW_ERR_DEPENDENCY), QW_CLASS_DEPENDENCY);
    CHECK_EQ_INT(qw_status_class_of(QW_ERR_IO), QW_CLASS_QUANTIZATION);
    CHECK_EQ_INT(qw_status_class_of((qw_status)999), QW_CLASS_QUANTIZATION);
}

TEST(errors_carry_context) {
    qw_error err;
    qw_error_clear(&err);
    CHECK_EQ_INT(err.offset, -1);
    CHECK_EQ_INT(qw_fail_at(&err, QW_ERR_CORRUPT, "blk.0.x", 42, "bad %d", 7), QW_ERR_CORRUPT);
    CHECK_EQ_STR(err.tensor, "blk.0.x");
    CHECK_EQ_INT(err.offset, 42);
    CHECK_EQ_STR(err.message, "bad 7");
    qw_error_prefix(&err, "reading %s: ", "f.gguf");
    CHECK_EQ_STR(err.message, "reading f.gguf: bad 7");
    CHECK_EQ_INT(qw_fail(NULL, QW_ERR_IO, "no error struct"), QW_ERR_IO); /* NULL is allowed */
    /* a long message is cut, never overflowed */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    qw_fail(&err, QW_ERR_IO, "%s", big);
    CHECK_EQ_INT(strlen(err.message), sizeof err.message - 1);
    qw_error_prefix(&err, "%s", big);
    CHECK_EQ_INT(strlen(err.message), sizeof err.message - 1);
}

static int progress_calls;
static int last_percent;
static int progress_cb(void *user, int percent, const char *stage, const char *message) {
    (void)stage;
    (void)message;
    progress_calls++;
    CHECK(percent >= last_percent);
    last_percent = percent;
    return user ? 1 : 0;
}

TEST(progress_is_monotone_and_cancels) {
    qw_reporter r = {0};
    r.progress = progress_cb;
    qw_error err;
    CHECK_OK(qw_progress(&r, 10, "a", "m", &err), &err);
    CHECK_OK(qw_progress(&r, 5, "b", "m", &err), &err); /* reported as 10 */
    CHECK_OK(qw_progress(&r, 200, "c", NULL, &err), &err);
    CHECK_EQ_INT(last_percent, 100);
    int flag = 1;
    r.user = &flag; /* the callback now asks to stop */
    CHECK_EQ_INT(qw_progress(&r, 100, "d", "m", &err), QW_ERR_CANCELLED);
    CHECK_EQ_INT(qw_check_cancel(&r, &err), QW_ERR_CANCELLED);
    volatile int cancel = 1;
    qw_reporter r2 = {0};
    r2.cancel = &cancel;
    CHECK_EQ_INT(qw_check_cancel(&r2, &err), QW_ERR_CANCELLED);
    CHECK_EQ_INT(qw_progress(NULL, 1, "x", "y", &err), QW_OK);
}

typedef struct pool_ctx {
    int *hits;
    int *worker_of;
} pool_ctx;

static void mark(void *p, size_t begin, size_t end, int worker) {
    pool_ctx *c = p;
    for (size_t i = begin; i < end; i++) {
        c->hits[i]++;
        c->worker_of[i] = worker;
    }
}

TEST(pool_runs_every_item_once) {
    for (int threads = 1; threads <= 4; threads++) {
        qw_pool *pool = NULL;
        qw_error err;
        CHECK_OK(qw_pool_create(threads, &pool, &err), &err);
        CHECK_EQ_INT(qw_pool_threads(pool), threads);
        for (int round = 0; round < 20; round++) {
            size_t n = 1000 + (size_t)round * 37;
            int *hits = calloc(n, sizeof *hits), *worker_of = calloc(n, sizeof *worker_of);
            pool_ctx c = {hits, worker_of};
            qw_pool_run(pool, n, 7, mark, &c);
            for (size_t i = 0; i < n; i++) {
                CHECK_EQ_INT(hits[i], 1);
                CHECK(worker_of[i] >= 0 && worker_of[i] < threads);
            }
            free(hits);
            free(worker_of);
        }
        qw_pool_run(pool, 0, 1, mark, NULL); /* nothing to do */
        qw_pool_free(pool);
    }
    /* no pool: the calling thread runs every chunk */
    int hits[50] = {0}, worker_of[50];
    pool_ctx c = {hits, worker_of};
    qw_pool_run(NULL, 50, 7, mark, &c);
    for (int i = 0; i < 50; i++) CHECK(hits[i] == 1 && worker_of[i] == 0);
    CHECK_EQ_INT(qw_pool_threads(NULL), 1);
    qw_pool_free(NULL);
    CHECK(qw_cpu_count() >= 1);
}

TEST(buffers_and_strings) {
    qw_buf b = {0};
    for (int i = 0; i < 1000; i++) CHECK(qw_buf_printf(&b, "%d,", i));
    CHECK(qw_str_starts_with(b.data, "0,1,2,"));
    CHECK(qw_str_ends_with(b.data, "998,999,"));
    qw_buf_free(&b);
    char *s = qw_sprintf("%s-%d", "a", 5);
    CHECK_EQ_STR(s, "a-5");
    qw_free(s);
    char lower[] = "Q4_K_M";
    CHECK_EQ_STR(qw_str_lower(lower), "q4_k_m");
    CHECK(qw_malloc_array(SIZE_MAX / 2, 4) == NULL); /* overflow is refused */
    uint64_t out;
    CHECK(qw_mul_overflows(UINT64_MAX, 2, &out));
    CHECK(!qw_mul_overflows(3, 4, &out) && out == 12);
    CHECK(qw_add_overflows(UINT64_MAX, 1, &out));
    char *base = qw_path_basename("/a/b/model-dir/");
    CHECK_EQ_STR(base, "model-dir");
    qw_free(base);
    char *j = qw_path_join("/x/", "y");
    CHECK_EQ_STR(j, "/x/y");
    qw_free(j);
}

TEST(output_files_publish_atomically) {
    char *dir = qw_path_join(test_tmpdir(), "out/deep/er");
    qw_error err;
    CHECK_OK(qw_mkdir_p(dir, &err), &err);
    char *final = qw_path_join(dir, "model.bin");
    unlink(final);
    qw_output *o = NULL;
    CHECK_OK(qw_output_open(final, &o, &err), &err);
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 5000; i++) CHECK_OK(qw_output_write(o, chunk, sizeof chunk, &err), &err);
    CHECK_EQ_INT(qw_output_offset(o), 5000000);
    CHECK(!qw_path_exists(final));
    CHECK(qw_path_exists(qw_output_temp_path(o)));
    CHECK_OK(qw_output_commit(o, &err), &err);
    struct stat sb;
    CHECK(stat(final, &sb) == 0 && sb.st_size == 5000000);

    /* an aborted replacement leaves the old file and no temporary behind */
    CHECK_OK(qw_output_open(final, &o, &err), &err);
    char *temp = qw_strdup(qw_output_temp_path(o));
    qw_output_write(o, "zz", 2, &err);
    qw_output_abort(o);
    CHECK(!qw_path_exists(temp));
    CHECK(stat(final, &sb) == 0 && sb.st_size == 5000000);
    qw_free(temp);

    /* a stale temporary of a dead writer is cleaned, a live one's is not */
    char *stale = qw_sprintf("%s/.model.bin.qwodel-tmp-999999999-0", dir);
    int fd = open(stale, O_CREAT | O_WRONLY, 0644);
    close(fd);
    char *mine = qw_sprintf("%s/.model.bin.qwodel-tmp-%ld-77", dir, (long)getpid());
    fd = open(mine, O_CREAT | O_WRONLY, 0644);
    close(fd);
    qw_output_clean_stale(final);
    CHECK(!qw_path_exists(stale));
    CHECK(qw_path_exists(mine));
    unlink(mine);
    qw_free(stale);
    qw_free(mine);

    /* the same for the temporary directories of directory outputs (a checkpoint, a package) */
    char *out_dir = qw_path_join(dir, "model-awq");
    char *dead_dir = qw_sprintf("%s.qwodel-tmp-999999999", out_dir);
    char *dead_file = qw_path_join(dead_dir, "model.safetensors");
    char *live_dir = qw_dir_temp_path(out_dir);
    CHECK(strstr(live_dir, ".qwodel-tmp-") != NULL);
    CHECK_OK(qw_mkdir_p(dead_dir, &err), &err);
    CHECK_OK(qw_mkdir_p(live_dir, &err), &err);
    fd = open(dead_file, O_CREAT | O_WRONLY, 0644);
    close(fd);
    qw_dir_clean_stale(out_dir);
    CHECK(!qw_path_exists(dead_dir));
    CHECK(qw_path_is_dir(live_dir));
    qw_dir_remove_tree(live_dir);
    CHECK(!qw_path_exists(live_dir));
    qw_free(out_dir);
    qw_free(dead_dir);
    qw_free(dead_file);
    qw_free(live_dir);

    CHECK_EQ_INT(qw_output_open("/nonexistent-dir/x.gguf", &o, &err), QW_ERR_IO);
    CHECK(strstr(err.message, "/nonexistent-dir/") != NULL);
    CHECK_EQ_INT(qw_mkdir_p(final, &err), QW_ERR_IO); /* a file is in the way */
    qw_free(final);
    qw_free(dir);
}

TEST(read_all_limits) {
    char *path = qw_path_join(test_tmpdir(), "small.txt");
    FILE *f = fopen(path, "w");
    fputs("hello world", f);
    fclose(f);
    char *data = NULL;
    size_t len = 0;
    qw_error err;
    CHECK_OK(qw_file_read_all(path, 100, &data, &len, &err), &err);
    CHECK_EQ_INT(len, 11);
    CHECK_EQ_STR(data, "hello world");
    qw_free(data);
    CHECK_EQ_INT(qw_file_read_all(path, 5, &data, &len, &err), QW_ERR_CORRUPT);
    CHECK_EQ_INT(qw_file_read_all("/nonexistent", 5, &data, &len, &err), QW_ERR_NOT_FOUND);
    qw_mapped m;
    CHECK_EQ_INT(qw_mapped_open(test_tmpdir(), &m, &err), QW_ERR_INVALID_ARG); /* a directory */
    qw_free(path);
}

/* A file of `pages` pages of 'x' at `path`. */
static void write_pages(const char *path, size_t pages) {
    long page = sysconf(_SC_PAGESIZE);
    char *buf = malloc((size_t)page);
    memset(buf, 'x', (size_t)page);
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; i < pages; i++) fwrite(buf, 1, (size_t)page, f);
    fclose(f);
    free(buf);
}

/* Runs body(arg) in a child process (for signal handlers and resource limits that must not touch
 * this one); its exit status, or -1 when it did not exit normally. */
static int child_exit_status(int (*body)(const char *), const char *arg) {
    pid_t pid = fork();
    if (pid == 0) _exit(body(arg));
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

static void exit_on_foreign_sigbus(int sig) {
    (void)sig;
    _exit(42);
}

/* Runs in a child: SIGBUS from a mapping qwodel did not make still reaches the handler that was
 * installed before qwodel's. Exit status 42: it did; anything else: it did not. */
static int child_foreign_sigbus(const char *dir) {
    struct sigaction mine, now;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = exit_on_foreign_sigbus;
    sigaction(SIGBUS, &mine, NULL);
    char *ours = qw_path_join(dir, "ours.bin");
    char *theirs = qw_path_join(dir, "theirs.bin");
    write_pages(ours, 2);
    write_pages(theirs, 2);
    qw_mapped m;
    qw_error err;
    if (qw_mapped_open(ours, &m, &err) != QW_OK) return 1;
    sigaction(SIGBUS, NULL, &now);
    if (now.sa_handler == exit_on_foreign_sigbus) return 2; /* qwodel's handler is not installed */
    long page = sysconf(_SC_PAGESIZE);
    int fd = open(theirs, O_RDONLY);
    volatile const char *p = mmap(NULL, 2 * (size_t)page, PROT_READ, MAP_PRIVATE, fd, 0);
    if (truncate(theirs, 0) != 0) return 3;
    return p[page] == 'x' ? 4 : 5; /* the read faults: neither return is reached */
}

TEST(foreign_sigbus_goes_to_the_previous_handler) {
    char *dir = qw_path_join(test_tmpdir(), "sigbus-foreign");
    qw_error err;
    CHECK_OK(qw_mkdir_p(dir, &err), &err);
    CHECK_EQ_INT(child_exit_status(child_foreign_sigbus, dir), 42);
    qw_free(dir);
}

TEST(shrinking_input_is_reported_and_nothing_published) {
    char *dir = qw_path_join(test_tmpdir(), "sigbus-shrink");
    qw_error err;
    CHECK_OK(qw_mkdir_p(dir, &err), &err);
    char *input = qw_path_join(dir, "model.safetensors");
    char *final = qw_path_join(dir, "out.gguf");
    unlink(final); /* from an earlier run of this test */
    write_pages(input, 4);
    long page = sysconf(_SC_PAGESIZE);
    qw_mapped m;
    CHECK_OK(qw_mapped_open(input, &m, &err), &err);
    qw_output *o = NULL;
    CHECK_OK(qw_output_open(final, &o, &err), &err);
    char *temp = qw_strdup(qw_output_temp_path(o));
    CHECK_EQ_INT(m.data[0], 'x');
    CHECK(truncate(input, page) == 0); /* another program rewrites the input */
    CHECK_EQ_INT(m.data[0], 'x');      /* the page still in the file reads as before */
    CHECK_EQ_INT(m.data[2 * page + 5], 0); /* a lost page reads as zeros instead of SIGBUS */
    CHECK_EQ_INT(m.data[3 * page], 0);
    CHECK_OK(qw_output_write(o, m.data, m.size, &err), &err);
    CHECK_EQ_INT(qw_output_commit(o, &err), QW_ERR_IO);
    CHECK(strstr(err.message, input) != NULL);
    CHECK(strstr(err.message, "changed on disk") != NULL);
    CHECK(!qw_path_exists(final));
    CHECK(!qw_path_exists(temp));
    CHECK_EQ_INT(qw_mapped_check_inputs(final, &err), QW_ERR_IO);
    CHECK_EQ_INT(qw_dir_publish(dir, final, NULL, "anything", &err), QW_ERR_IO);
    qw_mapped_close(&m);
    /* once the damaged input is closed, later outputs are not held against it */
    CHECK_OK(qw_mapped_check_inputs(final, &err), &err);
    CHECK_OK(qw_output_open(final, &o, &err), &err);
    CHECK_OK(qw_output_write(o, "ok", 2, &err), &err);
    CHECK_OK(qw_output_commit(o, &err), &err);
    CHECK(qw_path_is_file(final));
    qw_free(temp);
    qw_free(final);
    qw_free(input);
    qw_free(dir);
}

/* Runs in a child under a 1 MiB file-size limit (ulimit -f): the write fails with a clear error,
 * the temporary file goes, and the earlier output stays. 0: all as expected. */
static int child_file_size_limit(const char *final) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit limit = {1u << 20, 1u << 20};
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return 10;
    qw_output *o = NULL;
    qw_error err;
    if (qw_output_open(final, &o, &err) != QW_OK) return 11;
    char *temp = qw_strdup(qw_output_temp_path(o));
    static char chunk[1u << 16];
    qw_status st = QW_OK;
    for (int i = 0; i < 200 && st == QW_OK; i++) st = qw_output_write(o, chunk, sizeof chunk, &err);
    if (st == QW_OK) st = qw_output_commit(o, &err);
    else qw_output_abort(o);
    if (st != QW_ERR_IO) return 12;
    if (!strstr(err.message, final) || !strstr(err.message, "larger than allowed")) return 13;
    if (qw_path_exists(temp)) return 14;
    qw_free(temp);
    return 0;
}

TEST(file_size_limit_is_an_error_and_keeps_the_old_output) {
    char *final = qw_path_join(test_tmpdir(), "limited.gguf");
    FILE *f = fopen(final, "wb");
    fputs("earlier output", f);
    fclose(f);
    CHECK_EQ_INT(child_exit_status(child_file_size_limit, final), 0);
    char *data = NULL;
    qw_error err;
    CHECK_OK(qw_file_read_all(final, 100, &data, NULL, &err), &err);
    CHECK_EQ_STR(data, "earlier output");
    qw_free(data);
    qw_free(final);
}

TEST(json_files_are_written_whole_or_not_at_all) {
    char *dir = qw_path_join(test_tmpdir(), "json");
    qw_error err;
    CHECK_OK(qw_mkdir_p(dir, &err), &err);
    char *path = qw_path_join(dir, "config.json");
    unlink(path);
    json_t *v = json_pack("{s:i, s:[s, f], s:b}", "zeta", 7, "alpha", "\xc3\xa9t\xc3\xa9", 0.5,
                          "mid", 1);
    CHECK_OK(qw_json_write_file(v, dir, "config.json", &err), &err);
    char *text = NULL;
    CHECK_OK(qw_file_read_all(path, 1000, &text, NULL, &err), &err);
    CHECK(strstr(text, "{\n  \"zeta\": 7,") == text); /* indented, insertion order */
    CHECK(text[strlen(text) - 1] == '\n');
    qw_free(text);
    json_error_t jerr;
    json_t *back = json_load_file(path, 0, &jerr);
    CHECK(back && json_equal(back, v));
    json_decref(back);
    CHECK_OK(qw_json_write_file_flags(v, dir, "config.json", JSON_COMPACT | JSON_SORT_KEYS, &err),
             &err);
    CHECK_OK(qw_file_read_all(path, 1000, &text, NULL, &err), &err);
    CHECK(strncmp(text, "{\"alpha\":", 9) == 0);
    qw_free(text);

    /* jansson would write a key that is not UTF-8 as a lone quote: refused, the file untouched */
    json_t *bad = json_object();
    json_object_set_new(bad, "ok", json_integer(1));
    json_t *inner = json_object();
    json_object_set_new_nocheck(inner, "\xff\xfe", json_true());
    json_object_set_new(bad, "inner", inner);
    CHECK_EQ_INT(qw_json_write_file(bad, dir, "config.json", &err), QW_ERR_INVALID_ARG);
    CHECK(strstr(err.message, path) != NULL && strstr(err.message, "UTF-8") != NULL);
    CHECK_OK(qw_file_read_all(path, 1000, &text, NULL, &err), &err);
    CHECK(strncmp(text, "{\"alpha\":", 9) == 0);
    qw_free(text);
    json_t *scalar = json_integer(3);
    CHECK_EQ_INT(qw_json_write_file(scalar, dir, "other.json", &err), QW_ERR_INVALID_ARG);
    char *other = qw_path_join(dir, "other.json");
    CHECK(!qw_path_exists(other));
    qw_free(other);
    json_decref(scalar);
    json_decref(bad);
    json_decref(v);
    qw_free(path);
    qw_free(dir);
}

RUN_TESTS(TEST_CASE(foreign_sigbus_goes_to_the_previous_handler),
          TEST_CASE(every_status_has_a_name_message_and_class), TEST_CASE(errors_carry_context),
          TEST_CASE(progress_is_monotone_and_cancels), TEST_CASE(pool_runs_every_item_once),
          TEST_CASE(buffers_and_strings), TEST_CASE(output_files_publish_atomically),
          TEST_CASE(read_all_limits), TEST_CASE(shrinking_input_is_reported_and_nothing_published),
          TEST_CASE(file_size_limit_is_an_error_and_keeps_the_old_output),
          TEST_CASE(json_files_are_written_whole_or_not_at_all))
