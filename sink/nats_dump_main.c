/*
 * sink/nats_dump_main.c: prints every message of a JetStream stream, one
 * line each: "<seq> <subject> <Nats-Msg-Id> <Reel-Revision> <Reel-Subject>";
 * for the
 * end-to-end tests (tests/e2e/test_sink_nats.py), which check that the
 * stream holds each event once and in order.
 *
 *   nats_dump SERVER_URL STREAM
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <nats/nats.h>

int main(int argc, char **argv) {
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    int rc = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: nats_dump SERVER_URL STREAM\n");
        return 2;
    }
    if ((s = natsConnection_ConnectTo(&nc, argv[1])) != NATS_OK ||
        (s = natsConnection_JetStream(&js, nc, NULL)) != NATS_OK ||
        (s = js_GetStreamInfo(&si, js, argv[2], NULL, &jerr)) != NATS_OK) {
        fprintf(stderr, "nats_dump: %s (%d)\n", natsStatus_GetText(s),
                (int)jerr);
        goto out;
    }
    for (uint64_t seq = si->State.FirstSeq;
         si->State.Msgs > 0 && seq <= si->State.LastSeq; seq++) {
        natsMsg *m = NULL;
        const char *id = "-", *rev = "-", *rsubj = "-";

        jerr = 0;
        if ((s = js_GetMsg(&m, js, argv[2], seq, NULL, &jerr)) != NATS_OK) {
            if (jerr == JSNoMessageFoundErr)
                continue; /* deleted: a gap in the sequence */
            fprintf(stderr, "nats_dump: message %" PRIu64 ": %s (%d)\n", seq,
                    natsStatus_GetText(s), (int)jerr);
            goto out;
        }
        natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
        natsMsgHeader_Get(m, "Reel-Revision", &rev);
        natsMsgHeader_Get(m, "Reel-Subject", &rsubj);
        printf("%" PRIu64 " %s %s %s %s\n", seq, natsMsg_GetSubject(m), id,
               rev, rsubj);
        natsMsg_Destroy(m);
    }
    rc = 0;
out:
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return rc;
}
