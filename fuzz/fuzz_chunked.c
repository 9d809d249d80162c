/* libFuzzer target: the chunked body decoder and psproxy's re-framing. The
 * input is a chunked request body behind a fixed head; it arrives in reads
 * of a size the first byte picks. Each parse pass compacts its body bytes
 * in place (http_body_append, as conn.c and proxy.c do) and sends them as
 * one chunk (http_chunk_line). Invariants: the compacted bytes are the
 * bytes llhttp decoded, and the re-chunked body parses again to exactly
 * those bytes and ends where it should. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_http.h"

static const char HEAD[] = "POST /upload HTTP/1.1\r\n"
                           "Host: example.com\r\n"
                           "Transfer-Encoding: chunked\r\n"
                           "\r\n";

typedef struct body_parse {
    http_head_t head;
    int head_done, done;
    char *body;
    size_t body_len;
    fuzz_sink_t decoded;  /* what llhttp handed over, copied before compaction */
    fuzz_sink_t gathered; /* what the passes' compacted slices held */
} body_parse_t;

static body_parse_t *of(llhttp_t *p)
{
    return container_of(p, body_parse_t, head.parser);
}

static int on_begin(llhttp_t *p)
{
    http_head_reset(&of(p)->head);
    return 0;
}

static int on_headers(llhttp_t *p)
{
    of(p)->head_done = 1;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    body_parse_t *b = of(p);
    fuzz_sink_put(&b->decoded, at, len);
    http_body_append(&b->body, &b->body_len, at, len);
    return 0;
}

static int on_complete(llhttp_t *p)
{
    of(p)->done = 1;
    return HPE_PAUSED;
}

static llhttp_settings_t settings;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    http_settings_init(&settings);
    settings.on_message_begin = on_begin;
    settings.on_headers_complete = on_headers;
    settings.on_body = on_body;
    settings.on_message_complete = on_complete;
    return 0;
}

static void start(body_parse_t *b, http_hdr_t *table)
{
    memset(b, 0, sizeof(*b));
    http_head_init(&b->head, HTTP_REQUEST, &settings);
    b->head.hdrs = table;
}

/* Parses BUF[0..len) in reads of STEP bytes; each pass's body goes to
 * WIRE as one chunk. Returns the llhttp error that stopped it, or HPE_OK
 * with *USED the bytes the message took (a pipelined one may follow). */
static llhttp_errno_t parse_in_reads(body_parse_t *b, char *buf, size_t len, size_t step,
                                     fuzz_sink_t *wire, size_t *used)
{
    llhttp_t *p = &b->head.parser;
    size_t pos = 0, avail = 0;
    while (!b->done) {
        int paused = llhttp_get_errno(p) == HPE_PAUSED;
        if (!paused && pos == avail) {
            if (avail == len)
                break;
            avail = len - avail > step ? avail + step : len;
        }
        if (paused)
            llhttp_resume(p);
        b->body = NULL;
        b->body_len = 0;
        llhttp_errno_t err = llhttp_execute(p, buf + pos, avail - pos);
        /* a failing pass compacted its bytes too; proxy.c sends none of them */
        fuzz_sink_put(&b->gathered, b->body, b->body_len);
        if (err == HPE_OK)
            pos = avail;
        else if (err == HPE_PAUSED)
            pos = (size_t)(llhttp_get_error_pos(p) - buf);
        else
            return err;
        if (b->head_done) {
            b->head_done = 0;
            if (http_head_analyze(&b->head) != 0)
                return HPE_USER;
        }
        if (wire != NULL && b->body_len > 0)
            fuzz_put_body(wire, HTTP_BODY_CHUNKED, b->body, b->body_len);
    }
    *used = pos;
    return HPE_OK;
}

static void check_same(const fuzz_sink_t *a, const fuzz_sink_t *b, const char *what)
{
    if (!fuzz_equal(a->p, a->len, b->p, b->len))
        fuzz_fail(what);
}

static void dispose(body_parse_t *b)
{
    fuzz_sink_free(&b->decoded);
    fuzz_sink_free(&b->gathered);
}

/* conn.c's strict framing check must not depend on how the bytes arrive. */
static void check_framing_in_pieces(const char *body, size_t len, size_t step)
{
    http_chunk_check_t whole, pieces;
    http_chunk_check_init(&whole);
    http_chunk_check_init(&pieces);
    int w = http_chunk_check(&whole, body, len);
    int p = 0;
    for (size_t i = 0; i < len && p == 0; i += step)
        p = http_chunk_check(&pieces, body + i, len - i < step ? len - i : step);
    if (w != p)
        fuzz_fail("the chunk check reads the same bytes differently in pieces");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] + 1;
    check_framing_in_pieces((const char *)data + 1, size - 1, 1 + step % 5);
    size_t len = sizeof(HEAD) - 1 + size - 1;
    char *buf = malloc(len);
    memcpy(buf, HEAD, sizeof(HEAD) - 1);
    memcpy(buf + sizeof(HEAD) - 1, data + 1, size - 1);
    static http_table_t table_;

    body_parse_t *b = malloc(sizeof(*b));
    start(b, table_.hdrs);
    fuzz_sink_t wire = {0};
    fuzz_sink_put(&wire, HEAD, sizeof(HEAD) - 1);
    size_t used = 0;
    llhttp_errno_t err = parse_in_reads(b, buf, len, step, &wire, &used);
    check_same(&b->gathered, &b->decoded, "the compacted body differs from the decoded one");
    if (err == HPE_OK && b->done) {
        fuzz_put_end(&wire, HTTP_BODY_CHUNKED);
        /* what psproxy sends parses back to what it decoded, in any reads */
        body_parse_t *again = malloc(sizeof(*again));
        start(again, table_.hdrs);
        if (parse_in_reads(again, wire.p, wire.len, 1 + step % 7, NULL, &used) != HPE_OK ||
            !again->done || used != wire.len)
            fuzz_fail("the re-chunked body does not parse to its end");
        check_same(&again->decoded, &b->decoded, "the re-chunked body decodes differently");
        dispose(again);
        free(again);
    }
    fuzz_sink_free(&wire);
    dispose(b);
    free(b);
    free(buf);
    return 0;
}
