/*
 * base/file.h: a small file replaced whole, durably; the open-files limit.
 */
#ifndef REEL_BASE_FILE_H
#define REEL_BASE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/status.h"

/*
 * Writes len bytes as the whole of path, with permissions mode: into
 * "<path>.tmp" first, synced, renamed over path, then path's directory
 * synced, so that after OK the new content survives a crash and a crash
 * before it leaves the old one. On failure, UNAVAILABLE naming the file
 * and the system's reason, and no .tmp is left; path is as it was, unless
 * only the last step failed (the directory's sync), when path may hold the
 * new content without the promise that it survives a crash.
 */
reel_code_t reel_file_replace(const char *path, const void *data, size_t len,
                              mode_t mode, reel_status_t *st);

/* fsync of the directory that holds path ("." for a bare name). */
reel_code_t reel_file_sync_dir(const char *path, reel_status_t *st);

/*
 * Raises the soft open-files limit to the hard one, as servers usually do
 * (nginx, NATS): every connection is a descriptor, and the usual soft 1,024
 * is below what a process that holds many connections needs. Returns the
 * soft limit in force after, UINT64_MAX when unlimited or unknown. An
 * unlimited hard limit the kernel refuses (past fs.nr_open) leaves the soft
 * one as it was.
 */
uint64_t reel_raise_open_files(void);

#endif
