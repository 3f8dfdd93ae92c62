/*
 * fuzz/replay.c: the fuzz targets' inputs, run without libFuzzer (see
 * replay.h).
 */
#include "fuzz/replay.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as under libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Reads path whole into *buf (malloc'd, at least 1 byte). */
static int read_file(const char *path, uint8_t **buf, size_t *len) {
    FILE *fp = fopen(path, "rb");
    uint8_t *b = NULL;
    long size;
    int rc = -1;

    errno = 0;
    if (fp == NULL)
        goto out;
    if (fseek(fp, 0, SEEK_END) != 0 || (size = ftell(fp)) < 0 ||
        fseek(fp, 0, SEEK_SET) != 0)
        goto out;
    if ((b = malloc((size_t)size + 1)) == NULL)
        goto out;
    if (fread(b, 1, (size_t)size, fp) != (size_t)size)
        goto out;
    *buf = b, *len = (size_t)size;
    b = NULL;
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "replay: %s: %s\n", path,
                errno ? strerror(errno) : "short read");
    free(b);
    if (fp != NULL)
        fclose(fp);
    return rc;
}

static int run_file(const char *path, size_t *n) {
    uint8_t *buf;
    size_t len;

    if (read_file(path, &buf, &len) != 0)
        return -1;
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    (*n)++;
    return 0;
}

static int skip_dots(const struct dirent *e) {
    return e->d_name[0] != '.';
}

static int run_dir(const char *dir, size_t *n) {
    struct dirent **names;
    char path[4096];
    int count, rc = 0;

    if ((count = scandir(dir, &names, skip_dots, alphasort)) < 0) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < count; i++) {
        struct stat sb;

        if (rc == 0 && (size_t)snprintf(path, sizeof(path), "%s/%s", dir,
                                        names[i]->d_name) >= sizeof(path)) {
            fprintf(stderr, "replay: %s/%s: path too long\n", dir,
                    names[i]->d_name);
            rc = -1;
        }
        if (rc == 0 && stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            rc = run_file(path, n);
        free(names[i]);
    }
    free(names);
    return rc;
}

int fuzz_replay(const char *path, size_t *n) {
    static int initialized;
    struct stat sb;

    if (!initialized && LLVMFuzzerInitialize != NULL) {
        int argc = 1;
        char *args[] = {(char *)"replay", NULL}, **argv = args;

        LLVMFuzzerInitialize(&argc, &argv);
    }
    initialized = 1;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return S_ISDIR(sb.st_mode) ? run_dir(path, n) : run_file(path, n);
}
