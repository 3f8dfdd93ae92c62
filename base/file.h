/*
 * base/file.h: a small file replaced whole, durably.
 */
#ifndef REEL_BASE_FILE_H
#define REEL_BASE_FILE_H

#include <stddef.h>
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

#endif
