#include "base/page.h"

int reel_page_take(const reel_page_t *p, size_t taken, size_t *used,
                   const void *elem) {
    size_t sz;

    if (p == NULL || p->max_bytes == 0)
        return 1;
    sz = p->size(p->arg, elem);
    /* Written so that a huge size (a measure that failed) cannot wrap. */
    if (taken > 0 && (sz > p->max_bytes || *used > p->max_bytes - sz))
        return 0;
    *used = sz > (size_t)-1 - *used ? (size_t)-1 : *used + sz;
    return 1;
}
