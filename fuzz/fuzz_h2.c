/* libFuzzer target: HTTP/2 messages in HTTP/1.1 form and back (h2_msg.c).
 *
 * Input: byte 0 chooses END_STREAM and the size limit; then fields as
 * [name length: 1][name][value length: 2, big-endian][value] until the
 * input ends. Fields nghttp2 would refuse (RFC 9113 8.2-8.3: its own
 * checks) are dropped first, as the session does. Invariants: the head
 * h2_req_finish writes is HTTP/1.1 framing and nothing else: a request
 * line, field lines, one empty line, every line ended by CRLF and no CR,
 * LF or NUL inside one, so no field can smuggle another; and it stays
 * within the limit. The whole input is also read as a response head:
 * every field h2_resp_head returns is lowercase, has no CR/LF/NUL, and no
 * connection-specific one passes. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "h2_msg.h"
#include "http.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int pseudo_ok(const uint8_t *n, size_t nlen, const uint8_t *v, size_t vlen)
{
    if (nlen == 7 && memcmp(n, ":method", 7) == 0)
        return nghttp2_check_method(v, vlen);
    if (nlen == 5 && memcmp(n, ":path", 5) == 0)
        return vlen > 0 && nghttp2_check_path(v, vlen);
    if (nlen == 10 && memcmp(n, ":authority", 10) == 0)
        return nghttp2_check_authority(v, vlen);
    if (nlen == 7 && memcmp(n, ":scheme", 7) == 0)
        return vlen > 0;
    return 0;
}

static int field_ok(const uint8_t *n, size_t nlen, const uint8_t *v, size_t vlen)
{
    if (nlen > 0 && n[0] == ':')
        return pseudo_ok(n, nlen, v, vlen);
    if (!nghttp2_check_header_name(n, nlen) || !nghttp2_check_header_value_rfc9113(v, vlen))
        return 0;
    static const char *const banned[] = {"connection", "keep-alive", "proxy-connection",
                                         "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        if (nlen == strlen(banned[i]) && memcmp(n, banned[i], nlen) == 0)
            return 0;
    if (nlen == 2 && memcmp(n, "te", 2) == 0 && !(vlen == 8 && memcmp(v, "trailers", 8) == 0))
        return 0;
    for (size_t i = 0; i < nlen; i++)
        if (n[i] >= 'A' && n[i] <= 'Z')
            return 0; /* HTTP/2 names are lowercase */
    return 1;
}

static void check_head(const char *h, size_t len)
{
    if (len < 4 || memcmp(h + len - 4, "\r\n\r\n", 4) != 0)
        abort();
    size_t lines = 0;
    const char *p = h, *end = h + len - 2; /* the empty line's CRLF */
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr == NULL || cr[1] != '\n' || cr == p)
            abort(); /* a line ends in CRLF and is not empty before the end */
        for (const char *q = p; q < cr; q++)
            if (*q == '\n' || *q == '\0')
                abort();
        if (lines > 0 && memchr(p, ':', (size_t)(cr - p)) == NULL)
            abort(); /* a field line has a name */
        lines++;
        p = cr + 2;
    }
    if (p != end || lines == 0)
        abort();
}

static void request(const uint8_t *data, size_t size)
{
    static char buf[8192];
    int end_stream = data[0] & 1;
    size_t limit = (data[0] & 2) ? 256 : sizeof(buf);
    h2_req_t r;
    h2_req_init(&r, buf, sizeof(buf), limit);
    size_t i = 1;
    while (i < size) {
        size_t nlen = data[i++];
        if (size - i < nlen + 2)
            break;
        const uint8_t *n = data + i;
        i += nlen;
        size_t vlen = (size_t)data[i] << 8 | data[i + 1];
        i += 2;
        if (size - i < vlen)
            break;
        const uint8_t *v = data + i;
        i += vlen;
        if (field_ok(n, nlen, v, vlen) && h2_req_field(&r, n, nlen, v, vlen) < 0)
            return; /* decoded far past the limit: the session ends */
    }
    int len = h2_req_finish(&r, end_stream);
    if (len == -400 || len == -431)
        return;
    if (len <= 0 || (size_t)len > limit)
        abort();
    check_head(buf, (size_t)len);
}

static void response(const uint8_t *data, size_t size)
{
    char *head = malloc(size);
    if (head == NULL)
        abort();
    memcpy(head, data, size);
    nghttp2_nv nv[64];
    char status[4];
    size_t hl = 0;
    int n = h2_resp_head(head, size, nv, 64, status, &hl);
    if (n > 0) {
        if (hl > size || nv[0].namelen != 7)
            abort();
        for (int k = 1; k < n; k++) {
            uv_buf_t name = uv_buf_init((char *)nv[k].name, (unsigned)nv[k].namelen);
            if (http_token_eq(name, "connection") || http_token_eq(name, "transfer-encoding") ||
                http_token_eq(name, "keep-alive") || http_token_eq(name, "upgrade") ||
                http_token_eq(name, "proxy-connection"))
                abort();
            for (size_t j = 0; j < nv[k].namelen; j++)
                if ((nv[k].name[j] >= 'A' && nv[k].name[j] <= 'Z') || nv[k].name[j] == '\r' ||
                    nv[k].name[j] == '\n' || nv[k].name[j] == ':')
                    abort();
            for (size_t j = 0; j < nv[k].valuelen; j++)
                if (nv[k].value[j] == '\r' || nv[k].value[j] == '\n')
                    abort();
        }
    }
    free(head);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    request(data, size);
    response(data, size);
    return 0;
}
