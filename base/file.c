/*
 * base/file.c: see file.h.
 */
#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

reel_code_t reel_file_sync_dir(const char *path, reel_status_t *st) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd, ok, e;

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return reel_status_set(st, REEL_UNAVAILABLE, "cannot open %s: %s",
                               dir, strerror(errno));
    ok = fsync(fd) == 0;
    e = errno;
    close(fd);
    if (!ok)
        return reel_status_set(st, REEL_UNAVAILABLE, "cannot sync %s: %s",
                               dir, strerror(e));
    return REEL_OK;
}

static int write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

reel_code_t reel_file_replace(const char *path, const void *data, size_t len,
                              mode_t mode, reel_status_t *st) {
    char tmp[PATH_MAX];
    int fd, ok, e;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: path longer than %d bytes", path,
                               PATH_MAX - 5);
    /* A .tmp left by a crash is ours to replace; O_EXCL then makes sure
     * the file written is the one just created, with mode from the start
     * (fchmod: whatever the umask). */
    unlink(tmp);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0)
        return reel_status_set(st, REEL_UNAVAILABLE, "cannot create %s: %s",
                               tmp, strerror(errno));
    ok = fchmod(fd, mode) == 0 && write_all(fd, data, len) == 0 &&
         fsync(fd) == 0;
    e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return reel_status_set(st, REEL_UNAVAILABLE, "cannot write %s: %s",
                               path, strerror(e));
    }
    return reel_file_sync_dir(path, st);
}

uint64_t reel_raise_open_files(void) {
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return UINT64_MAX;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;

        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}
