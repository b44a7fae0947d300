/*
 * file.h — input files mapped read-only, and output files written under a temporary name and
 * renamed into place only when complete.
 */
#ifndef QW_FILE_H
#define QW_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* A read-only view of a whole file (mmap), or of a caller's memory buffer. */
typedef struct qw_mapped {
    const uint8_t *data;
    size_t size;
    char *path;     /* owned; for messages */
    bool owns_map;  /* true: munmap on close */
    int watch_slot; /* 1 + its entry in the table the SIGBUS handler reads; 0: none */
} qw_mapped;

/* A mapped file that shrinks while it is read (another program truncates or rewrites it) or whose
 * pages cannot be read (an I/O error) raises SIGBUS where its data is touched. qw_mapped_open
 * installs, once per process, a SIGBUS handler that maps a page of zeros over the faulting page of
 * a file it mapped, records which file it was, and lets the work go on; faults anywhere else go to
 * the handler that was there before (or the default one). qw_output_commit and qw_dir_publish then
 * refuse to publish anything computed while an input was damaged: the run ends with an error
 * naming the file, and its temporary output is removed. */
qw_status qw_mapped_open(const char *path, qw_mapped *out, qw_error *err);
/* Wraps memory the caller keeps alive; `label` names it in messages. */
qw_status qw_mapped_wrap(const void *data, size_t size, const char *label, qw_mapped *out,
                         qw_error *err);
void qw_mapped_close(qw_mapped *m);

/* Tells the kernel that a range of a read-only file mapping will not be needed soon, so its pages
 * leave this process's resident set (they stay in the page cache, and reading them again simply
 * faults them back in). Keeps peak RSS to the tensors in flight rather than the whole model. */
void qw_mapped_release(const void *data, size_t bytes);

/* Reads a whole (small) file into a NUL-terminated buffer; refuses files above max_bytes. */
qw_status qw_file_read_all(const char *path, size_t max_bytes, char **out, size_t *out_len,
                           qw_error *err);

bool qw_path_exists(const char *path);
bool qw_path_is_dir(const char *path);
bool qw_path_is_file(const char *path);
/* "dir/name" (allocates). */
char *qw_path_join(const char *dir, const char *name);
/* Creates a directory and its parents (like mkdir -p). */
qw_status qw_mkdir_p(const char *path, qw_error *err);
/* Last path component without a trailing slash, allocated. */
char *qw_path_basename(const char *path);

/* An output file: written to "<dir>/.<name>.qwodel-tmp-<pid>-<n>" and renamed to its final path
 * by qw_output_commit. qw_output_abort (or freeing without commit) removes the temporary file.
 * Writes are double-buffered through a writer thread; every failure (disk full, I/O error) is
 * reported, at the latest by commit. One thread uses a qw_output at a time. */
typedef struct qw_output qw_output;

qw_status qw_output_open(const char *final_path, qw_output **out, qw_error *err);
/* Claims `bytes` of disk up front where the filesystem can (fallocate): a full disk is then
 * reported before any work, and the data lands in place. A shorter file is trimmed at commit. */
qw_status qw_output_reserve(qw_output *o, uint64_t bytes, qw_error *err);
qw_status qw_output_write(qw_output *o, const void *data, size_t bytes, qw_error *err);
qw_status qw_output_write_zeros(qw_output *o, size_t bytes, qw_error *err);
uint64_t qw_output_offset(const qw_output *o);
/* Flushes, syncs, and renames into place; the handle is freed whatever the outcome. */
qw_status qw_output_commit(qw_output *o, qw_error *err);
/* Removes the temporary file and frees the handle; NULL is a no-op. */
void qw_output_abort(qw_output *o);
const char *qw_output_temp_path(const qw_output *o);

/* The error for a write to `path` that failed with errno `e`, saying plainly when the disk is full
 * or a file-size limit (ulimit -f) was reached. */
qw_status qw_fail_write(const char *path, int e, qw_error *err);

/* QW_ERR_IO naming the damaged file if a mapped input was damaged (see qw_mapped_open) since the
 * oldest mapping still open was opened; `output` names what is not being written. */
qw_status qw_mapped_check_inputs(const char *output, qw_error *err);

/* Removes temporary files that an earlier, killed run left next to final_path. */
void qw_output_clean_stale(const char *final_path);

/* Directory outputs (a checkpoint folder, an .mlpackage) are built under a temporary name next
 * to the final one and moved into place when complete. */

/* "<final_path>.qwodel-tmp-<pid>": where this process builds a directory output (allocated). */
char *qw_dir_temp_path(const char *final_path);
/* Removes the temporary directories that earlier, killed runs left next to final_path. */
void qw_dir_clean_stale(const char *final_path);
/* Removes a directory tree of files and subdirectories (or a single file); errors are ignored:
 * used to clean up what a run itself wrote. */
void qw_dir_remove_tree(const char *path);
/* Moves the finished directory `tmp` to `final`. An existing `final` is replaced only when
 * `replaceable(final)` says it is an earlier output of the same kind; anything else there is
 * left alone and the error says it is not `kind` ("a quantized checkpoint"). The earlier output
 * is moved aside first and restored if the rename fails. */
qw_status qw_dir_publish(const char *tmp, const char *final, bool (*replaceable)(const char *dir),
                         const char *kind, qw_error *err);

#endif /* QW_FILE_H */
