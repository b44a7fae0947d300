/* The built-in calibration text: what "builtin" loads, that every sample is a well-formed,
 * reasonably sized UTF-8 paragraph, that the text is as varied as calibration needs, and that
 * only the default dataset (spec NULL) falls back to it offline. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub.h"
#include "test.h"

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. Calls
 * `seen` with each code point so a test can look at which scripts occur. */
static bool utf8_valid(const char *s, void (*seen)(uint32_t cp, void *user), void *user) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        int extra;
        if (p[0] < 0x80) cp = p[0], extra = 0;
        else if ((p[0] & 0xE0) == 0xC0) cp = p[0] & 0x1Fu, extra = 1;
        else if ((p[0] & 0xF0) == 0xE0) cp = p[0] & 0x0Fu, extra = 2;
        else if ((p[0] & 0xF8) == 0xF0) cp = p[0] & 0x07u, extra = 3;
        else return false;
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80) return false; /* also stops at the terminating NUL */
            cp = cp << 6 | (p[i] & 0x3Fu);
        }
        static const uint32_t min_for_length[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_length[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        if (seen) seen(cp, user);
        p += extra + 1;
    }
    return true;
}

/* Code points per script, counted over the whole corpus. */
typedef struct scripts {
    size_t latin_accented, cyrillic, cjk, kana, control;
} scripts;

static void count_script(uint32_t cp, void *user) {
    scripts *s = user;
    if (cp >= 0xC0 && cp <= 0x17F) s->latin_accented++;
    if (cp >= 0x400 && cp <= 0x4FF) s->cyrillic++;
    if (cp >= 0x4E00 && cp <= 0x9FFF) s->cjk++;
    if (cp >= 0x3040 && cp <= 0x30FF) s->kana++;
    if (cp < 0x20 && cp != '\n') s->control++;
}

TEST(builtin_loads_every_sample) {
    const size_t n = qw_calib_builtin_count();
    CHECK(n >= 30);
    CHECK(qw_calib_builtin_sample(n) == NULL);
    qw_calib *c = NULL;
    qw_error err = {0};
    CHECK_OK(qw_calib_load("builtin", NULL, 100000, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 0, n);
    CHECK(c && c->builtin);
    size_t total = 0;
    scripts seen = {0};
    for (size_t i = 0; c && i < c->n_samples && i < n; i++) {
        const size_t len = strlen(c->samples[i]);
        total += len;
        CHECK_EQ_STR(c->samples[i], qw_calib_builtin_sample(i));
        if (len < 300 || len > 1500) {
            fprintf(stderr, "  sample %zu is %zu bytes, outside 300..1500\n", i, len);
            CHECK(false);
        }
        if (!utf8_valid(c->samples[i], count_script, &seen)) {
            fprintf(stderr, "  sample %zu is not valid UTF-8\n", i);
            CHECK(false);
        }
    }
    CHECK(total >= 24000);
    /* the non-English samples are there, and no stray tab or control byte */
    CHECK(seen.latin_accented > 10);
    CHECK(seen.cyrillic > 10);
    CHECK(seen.cjk > 10);
    CHECK(seen.kana > 10);
    CHECK_EQ_INT(seen.control, 0);
    qw_calib_free(c);
}

TEST(builtin_is_varied) {
    /* one marker per kind of text the corpus promises; each must occur in some sample */
    static const char *const markers[] = {"#include", "def ", "function ", "\"order_id\"",
                                          "## ", "| ", "= 16", "\"You", "1742", "Q: "};
    for (size_t m = 0; m < sizeof markers / sizeof markers[0]; m++) {
        bool found = false;
        for (size_t i = 0; i < qw_calib_builtin_count() && !found; i++) {
            found = strstr(qw_calib_builtin_sample(i), markers[m]) != NULL;
        }
        if (!found) fprintf(stderr, "  no sample contains \"%s\"\n", markers[m]);
        CHECK(found);
    }
}

TEST(builtin_name_and_limit) {
    qw_calib *c = NULL;
    qw_error err = {0};
    CHECK_OK(qw_calib_load("BuiltIn", "validation", 5, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 0, 5);
    if (c && c->n_samples == 5) CHECK_EQ_STR(c->samples[4], qw_calib_builtin_sample(4));
    qw_calib_free(c);
    CHECK_OK(qw_calib_load("builtin", NULL, 0, NULL, NULL, &c, &err), &err);
    CHECK_EQ_INT(c ? c->n_samples : 1, 0);
    qw_calib_free(c);
}

typedef struct captured {
    int warnings;
    char last[1024];
} captured;

static void capture_log(void *user, int level, const char *logger, const char *message) {
    (void)logger;
    captured *cap = user;
    if (level >= QW_LOG_WARNING) {
        cap->warnings++;
        snprintf(cap->last, sizeof cap->last, "%s", message);
    }
}

TEST(default_falls_back_offline_named_does_not) {
    char cache[600];
    snprintf(cache, sizeof cache, "%s/calib-builtin-empty-cache", test_tmpdir());
    setenv("HF_HUB_CACHE", cache, 1);
    setenv("HF_HUB_OFFLINE", "1", 1);
    captured cap = {0};
    qw_reporter r = {0};
    r.log = capture_log;
    r.user = &cap;
    qw_calib *c = NULL;
    qw_error err = {0};
    CHECK_OK(qw_calib_load(NULL, NULL, 8, NULL, &r, &c, &err), &err);
    CHECK(c && c->builtin);
    CHECK_EQ_INT(c ? c->n_samples : 0, 8);
    CHECK_EQ_INT(cap.warnings, 1);
    CHECK(strstr(cap.last, "wikitext") != NULL);         /* what could not be read */
    CHECK(strstr(cap.last, "HF_HUB_OFFLINE") != NULL);   /* and why */
    CHECK(strstr(cap.last, "built-in") != NULL);         /* what is used instead */
    CHECK(strstr(cap.last, "calibration_dataset") != NULL); /* how to choose */
    qw_calib_free(c);
    c = NULL;
    /* the same dataset named by the caller is an error, not replaced */
    cap.warnings = 0;
    CHECK_EQ_INT(qw_calib_load(QW_CALIB_DEFAULT_DATASET, NULL, 8, NULL, &r, &c, &err),
                 QW_ERR_NETWORK);
    CHECK(c == NULL);
    CHECK(strstr(err.message, "wikitext") != NULL);
    CHECK_EQ_INT(cap.warnings, 0);
    CHECK_EQ_INT(qw_calib_load("", NULL, 8, NULL, &r, &c, &err), QW_ERR_INVALID_ARG);
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("HF_HUB_CACHE");
}

/* A loopback port that refuses connections: bound (so nobody else takes it), never listening. */
static int closed_port(int *fd_out) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *fd_out = fd;
    return ntohs(a.sin_port);
}

TEST(default_falls_back_when_unreachable) {
    int fd = -1, port = closed_port(&fd);
    CHECK(port > 0);
    if (port <= 0) return;
    char cache[600], server[64];
    snprintf(cache, sizeof cache, "%s/calib-builtin-empty-cache", test_tmpdir());
    snprintf(server, sizeof server, "http://127.0.0.1:%d", port);
    setenv("HF_HUB_CACHE", cache, 1);
    setenv("HF_DATASETS_SERVER", server, 1);
    unsetenv("HF_HUB_OFFLINE");
    captured cap = {0};
    qw_reporter r = {0};
    r.log = capture_log;
    r.user = &cap;
    qw_calib *c = NULL;
    qw_error err = {0};
    CHECK_OK(qw_calib_load(NULL, NULL, 3, NULL, &r, &c, &err), &err);
    CHECK(c && c->builtin);
    CHECK_EQ_INT(c ? c->n_samples : 0, 3);
    CHECK_EQ_INT(cap.warnings, 1);
    CHECK(strstr(cap.last, "cannot reach") != NULL);
    qw_calib_free(c);
    c = NULL;
    CHECK_EQ_INT(qw_calib_load("org/some-set", NULL, 3, NULL, &r, &c, &err), QW_ERR_NETWORK);
    CHECK(c == NULL);
    CHECK(strstr(err.message, "org/some-set") != NULL);
    CHECK_EQ_INT(cap.warnings, 1);
    unsetenv("HF_DATASETS_SERVER");
    unsetenv("HF_HUB_CACHE");
    close(fd);
}

RUN_TESTS(TEST_CASE(builtin_loads_every_sample), TEST_CASE(builtin_is_varied),
          TEST_CASE(builtin_name_and_limit), TEST_CASE(default_falls_back_offline_named_does_not),
          TEST_CASE(default_falls_back_when_unreachable))
