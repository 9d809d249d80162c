/* The framing invariant for HTTP/2 (issue #18), on the real h2.c and
 * nghttp2 in one process (tests/harness/h2_harness.h): whatever reads the
 * client's frames arrive in, each stream that is forwarded becomes exactly
 * one upstream request framed by psproxy and followed by exactly the bytes
 * the client sent as its body. Every case is run with all its frames in
 * one read and split into two reads at every byte boundary. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>

#include "h2_harness.h"
#include "http.h"
#include "log.h"
#include "test.h"

#define MAX_HEADER 32768

/* The client's bytes for one case, and what must come of them. */
typedef struct one_case {
    const char *name;
    h2h_bytes_t frames;
    const char *body; /* the body the client sent */
    size_t body_len;
    int framing; /* the upstream request's */
} one_case_t;

static h2h_t *start(void)
{
    log_set_level(LOG_ERR); /* a defence that fires says so at info */
    h2h_t *t = h2h_new(MAX_HEADER);
    h2h_bytes_t pre = {0};
    h2h_preface(&pre);
    h2h_read(t, pre.p, pre.len);
    h2h_bytes_free(&pre);
    return t;
}

/* Reads FRAMES in two reads cut at K (one read when K is 0). */
static h2h_t *run_split(const h2h_bytes_t *frames, size_t k)
{
    h2h_t *t = start();
    if (k > 0)
        h2h_read(t, frames->p, k);
    h2h_read(t, frames->p + k, frames->len - k);
    return t;
}

static int failures; /* cases that failed, so that one report names the first few */

static void report(const char *name, size_t k, const char *why)
{
    if (++failures <= 5)
        fprintf(stderr, "  %s, split at %zu: %s\n", name, k, why);
    test_failed_now = 1;
}

/* One forwarded stream, complete, with exactly its body upstream, framed as
 * the case says, and answered 200 to the client. */
static void check_one_stream(h2h_t *t, const one_case_t *c, size_t k)
{
    h2h_stream_t *s = h2h_stream(t, 1);
    const char *why = NULL;
    if (s == NULL || s->next != NULL || h2h_streams(t) != s)
        why = "not exactly one stream";
    else if (!s->forwarded || !s->complete || s->broken)
        why = s->broken ? "the framing invariant refused its body" : "not forwarded whole";
    else if (s->framing != c->framing)
        why = "framed otherwise upstream";
    else if ((why = h2h_check_upstream(s, c->body, c->body_len)) != NULL)
        ;
    else if (s->status != 200 || !s->ended || s->rst > 0)
        why = "the client did not get the answer";
    if (why != NULL)
        report(c->name, k, why);
}

static void sweep(const one_case_t *c, void (*check)(h2h_t *, const one_case_t *, size_t))
{
    for (size_t k = 0; k < c->frames.len; k++) {
        h2h_t *t = run_split(&c->frames, k);
        check(t, c, k);
        h2h_free(t);
    }
}

static const char BODY[] = "a=1&b=22&c=333\r\nGET /x HTTP/1.1\r\n\r\n";

/* HEADERS for METHOD on stream SID with CL (NULL: no content-length). */
static void request_headers(h2h_bytes_t *b, h2h_enc_t *e, int32_t sid, const char *method,
                            const char *path, const char *cl, int end)
{
    const char *names[] = {":method",    ":scheme",    ":path",
                           ":authority", "user-agent", "content-length"};
    const char *values[] = {method, "https", path, "a.test", "unit", cl};
    if (h2h_headers(b, e, sid, end, names, values, cl != NULL ? 6 : 5) != 0)
        abort();
}

enum variant { V_CL_BODY, V_BODY, V_EMPTY_DATA_CL0, V_EMPTY_DATA, V_NO_BODY, V_N };
static const char *const variant_names[] = {
    "body with content-length", "body without content-length", "empty DATA with content-length 0",
    "empty DATA", "END_STREAM on HEADERS"};

static void make_case(one_case_t *c, const char *method, enum variant v, char *name, size_t cap)
{
    memset(c, 0, sizeof(*c));
    snprintf(name, cap, "%s, %s", method, variant_names[v]);
    c->name = name;
    h2h_enc_t *e = h2h_enc_new();
    char cl[16];
    snprintf(cl, sizeof(cl), "%zu", sizeof(BODY) - 1);
    switch (v) {
    case V_CL_BODY:
    case V_BODY:
        request_headers(&c->frames, e, 1, method, "/p", v == V_CL_BODY ? cl : NULL, 0);
        h2h_frame(&c->frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, BODY, sizeof(BODY) - 1);
        c->body = BODY;
        c->body_len = sizeof(BODY) - 1;
        c->framing = v == V_CL_BODY ? HTTP_BODY_LENGTH : HTTP_BODY_CHUNKED;
        break;
    case V_EMPTY_DATA_CL0:
    case V_EMPTY_DATA:
        request_headers(&c->frames, e, 1, method, "/p", v == V_EMPTY_DATA_CL0 ? "0" : NULL, 0);
        h2h_frame(&c->frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, NULL, 0);
        c->body = "";
        /* without a length, the head cannot know the body will be empty */
        c->framing = v == V_EMPTY_DATA ? HTTP_BODY_CHUNKED : HTTP_BODY_NONE;
        break;
    default:
        request_headers(&c->frames, e, 1, method, "/p", NULL, 1);
        c->body = "";
        c->framing = HTTP_BODY_NONE;
        break;
    }
    h2h_enc_free(e);
}

TEST(each_method_and_body_shape_is_one_request_at_every_split)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT"};
    failures = 0;
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        for (int v = 0; v < V_N; v++) {
            char name[96];
            one_case_t c;
            make_case(&c, methods[m], (enum variant)v, name, sizeof(name));
            sweep(&c, check_one_stream);
            h2h_bytes_free(&c.frames);
        }
    }
}

/* The report of issue #18: the body of a GET whose HEADERS and DATA came
 * in one read went up raw after a head without a length. */
TEST(a_get_body_that_is_a_request_never_reaches_the_upstream_as_one)
{
    static const char SMUGGLED[] = "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";
    one_case_t c = {"smuggled GET", {0}, SMUGGLED, sizeof(SMUGGLED) - 1, HTTP_BODY_CHUNKED};
    h2h_enc_t *e = h2h_enc_new();
    request_headers(&c.frames, e, 1, "GET", "/", NULL, 0);
    h2h_frame(&c.frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, SMUGGLED, sizeof(SMUGGLED) - 1);
    h2h_enc_free(e);
    failures = 0;
    h2h_t *t = run_split(&c.frames, 0);
    check_one_stream(t, &c, 0);
    h2h_stream_t *s = h2h_stream(t, 1);
    CHECK(s != NULL && strstr(s->up, "Transfer-Encoding: chunked") != NULL);
    h2h_free(t);
    sweep(&c, check_one_stream);
    h2h_bytes_free(&c.frames);
}

static void check_no_trailer_in_head(h2h_t *t, const one_case_t *c, size_t k)
{
    check_one_stream(t, c, k);
    h2h_stream_t *s = h2h_stream(t, 1);
    if (s != NULL && s->up != NULL && memmem(s->up, s->up_len, "x-trailer", 9) != NULL)
        report(c->name, k, "a trailer field went up in the head");
}

TEST(trailers_never_become_fields_of_the_upstream_head)
{
    one_case_t c = {"trailers", {0}, BODY, sizeof(BODY) - 1, HTTP_BODY_CHUNKED};
    h2h_enc_t *e = h2h_enc_new();
    request_headers(&c.frames, e, 1, "POST", "/t", NULL, 0);
    h2h_frame(&c.frames, NGHTTP2_DATA, 0, 1, BODY, sizeof(BODY) - 1);
    const char *names[] = {"x-trailer"};
    const char *values[] = {"late"};
    if (h2h_headers(&c.frames, e, 1, 1, names, values, 1) != 0)
        abort();
    h2h_enc_free(e);
    failures = 0;
    sweep(&c, check_no_trailer_in_head);
    h2h_bytes_free(&c.frames);
}

/* RFC 9113 8.1.1: a content-length the DATA does not match is malformed:
 * RST_STREAM(PROTOCOL_ERROR), and the upstream never gets a whole request
 * (nothing at all when the mismatch is known before the stream starts). */
static void check_malformed(h2h_t *t, const one_case_t *c, size_t k)
{
    h2h_stream_t *s = h2h_streams(t);
    const char *why = NULL;
    if (s == NULL || s->next != NULL)
        why = "not exactly one stream";
    else if (s->complete)
        why = "a whole request went up";
    else if (s->rst != NGHTTP2_PROTOCOL_ERROR)
        why = "no RST_STREAM(PROTOCOL_ERROR)";
    else if (s->status == 200)
        why = "answered 200";
    else if ((why = h2h_check_upstream(s, NULL, 0)) != NULL)
        ;
    else if (k == 0 && s->forwarded)
        why = "forwarded though it was malformed within the read";
    if (why != NULL)
        report(c->name, k, why);
}

TEST(a_content_length_the_data_does_not_match_is_reset_and_never_whole_upstream)
{
    static const char *const cls[] = {"10", "5"};
    static const size_t sends[] = {5, 10};
    failures = 0;
    for (int i = 0; i < 2; i++) {
        one_case_t c = {cls[i][0] == '1' ? "content-length 10, 5 bytes"
                                         : "content-length 5, 10 bytes",
                        {0},
                        NULL,
                        0,
                        HTTP_BODY_LENGTH};
        h2h_enc_t *e = h2h_enc_new();
        request_headers(&c.frames, e, 1, "POST", "/m", cls[i], 0);
        h2h_frame(&c.frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "0123456789", sends[i]);
        h2h_enc_free(e);
        sweep(&c, check_malformed);
        h2h_bytes_free(&c.frames);
    }
}

/* Three streams whose HEADERS and DATA interleave: each body goes up with
 * its own request, whatever the reads. */
static void check_three(h2h_t *t, const one_case_t *c, size_t k)
{
    static const char *const bodies[] = {"one", "", "three-3"};
    for (int i = 0; i < 3; i++) {
        h2h_stream_t *s = h2h_stream(t, 2 * i + 1);
        const char *why = NULL;
        if (s == NULL || !s->complete || s->broken)
            why = "a stream was not forwarded whole";
        else
            why = h2h_check_upstream(s, bodies[i], strlen(bodies[i]));
        if (why != NULL) {
            report(c->name, k, why);
            return;
        }
    }
}

TEST(interleaved_streams_each_carry_their_own_body)
{
    one_case_t c = {"interleaved", {0}, NULL, 0, 0};
    h2h_enc_t *e = h2h_enc_new();
    request_headers(&c.frames, e, 1, "POST", "/1", "3", 0);
    request_headers(&c.frames, e, 3, "GET", "/3", NULL, 0);
    request_headers(&c.frames, e, 5, "PUT", "/5", NULL, 0);
    h2h_frame(&c.frames, NGHTTP2_DATA, 0, 5, "three", 5);
    h2h_frame(&c.frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 3, NULL, 0);
    h2h_frame(&c.frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "one", 3);
    h2h_frame(&c.frames, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 5, "-3", 2);
    h2h_enc_free(e);
    failures = 0;
    sweep(&c, check_three);
    h2h_bytes_free(&c.frames);
}

/* Before the client has our SETTINGS it may send 65,535 bytes, more than a
 * stream's buffer holds: the rest waits in the spill, and still goes up as
 * the same request's body, once. */
TEST(a_body_larger_than_the_stream_buffer_goes_up_whole)
{
    static char big[60000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    for (int with_cl = 0; with_cl < 2; with_cl++) {
        h2h_bytes_t f = {0};
        h2h_enc_t *e = h2h_enc_new();
        request_headers(&f, e, 1, "POST", "/big", with_cl ? "60000" : NULL, 0);
        for (size_t off = 0; off < sizeof(big); off += 16384) {
            size_t n = sizeof(big) - off < 16384 ? sizeof(big) - off : 16384;
            h2h_frame(&f, NGHTTP2_DATA, off + n == sizeof(big) ? NGHTTP2_FLAG_END_STREAM : 0, 1,
                      big + off, n);
        }
        h2h_enc_free(e);
        one_case_t c = {with_cl ? "60000 bytes with content-length" : "60000 bytes chunked", f, big,
                        sizeof(big), with_cl ? HTTP_BODY_LENGTH : HTTP_BODY_CHUNKED};
        failures = 0;
        static const size_t cuts[] = {0, 1, 50, 9000, 36864, 40000, 59000};
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
            h2h_t *t = run_split(&f, cuts[i]);
            check_one_stream(t, &c, cuts[i]);
            h2h_free(t);
        }
        h2h_bytes_free(&f);
    }
}

/* RFC 9113 5.1.1: a stream id lower than one the client opened, never
 * used, is a connection error PROTOCOL_ERROR; nothing of it is forwarded. */
TEST(a_skipped_stream_id_is_goaway_protocol_error)
{
    h2h_bytes_t f = {0};
    h2h_enc_t *e = h2h_enc_new();
    request_headers(&f, e, 5, "GET", "/5", NULL, 1);
    request_headers(&f, e, 3, "GET", "/3", NULL, 1);
    h2h_enc_free(e);
    for (size_t k = 0; k < f.len; k++) {
        h2h_t *t = run_split(&f, k);
        CHECK_INT(h2h_goaway(t), NGHTTP2_PROTOCOL_ERROR);
        h2h_stream_t *s3 = h2h_stream(t, 3);
        CHECK(s3 == NULL || (!s3->forwarded && s3->up_len == 0));
        h2h_free(t);
    }
    h2h_bytes_free(&f);
}

/* A HEADERS on a stream that was opened and is over (trailers racing our
 * answer) is not a skipped id: the connection goes on. */
TEST(headers_on_a_finished_stream_do_not_end_the_connection)
{
    h2h_t *t = start();
    h2h_bytes_t f = {0};
    h2h_enc_t *e = h2h_enc_new();
    request_headers(&f, e, 1, "GET", "/1", NULL, 1);
    h2h_read(t, f.p, f.len);
    h2h_stream_t *s1 = h2h_stream(t, 1);
    CHECK(s1 != NULL && s1->status == 200 && s1->ended);
    f.len = 0;
    const char *names[] = {"x-trailer"};
    const char *values[] = {"late"};
    h2h_headers(&f, e, 1, 1, names, values, 1);
    request_headers(&f, e, 3, "GET", "/3", NULL, 1);
    h2h_read(t, f.p, f.len);
    CHECK(h2h_goaway(t) != NGHTTP2_PROTOCOL_ERROR);
    if (h2h_goaway(t) == -1) {
        h2h_stream_t *s3 = h2h_stream(t, 3);
        CHECK(s3 != NULL && s3->status == 200);
    }
    h2h_enc_free(e);
    h2h_bytes_free(&f);
    h2h_free(t);
}

/* The skipped ids are kept as the newest eight ranges (memory stays
 * bounded whatever the client skips): after nine skips, each of the
 * eight newest is still refused, and the request on it never forwarded. */
TEST(the_newest_eight_skipped_ranges_are_each_still_refused)
{
    /* opens 1, 5, 9, ... 37: skips 3, 7, ... 35, nine ranges of one id */
    for (int32_t late = 7; late <= 35; late += 4) {
        h2h_bytes_t f = {0};
        h2h_enc_t *e = h2h_enc_new();
        for (int32_t id = 1; id <= 37; id += 4)
            request_headers(&f, e, id, "GET", "/open", NULL, 1);
        request_headers(&f, e, late, "GET", "/late", NULL, 1);
        h2h_enc_free(e);
        h2h_t *t = run_split(&f, 0);
        if (h2h_goaway(t) != NGHTTP2_PROTOCOL_ERROR)
            TEST_FAIL("stream %d: GOAWAY %d, expected PROTOCOL_ERROR", late, h2h_goaway(t));
        h2h_stream_t *s = h2h_stream(t, late);
        CHECK(s == NULL || (!s->forwarded && s->up_len == 0));
        h2h_free(t);
        h2h_bytes_free(&f);
    }
}

TEST_MAIN()
