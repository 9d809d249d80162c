/* What the HTTP fuzzers share: the fixed config whose header ops they
 * apply, and a byte sink that collects what would go on the wire. */
#ifndef PS_FUZZ_HTTP_H
#define PS_FUZZ_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common.h" /* psproxy's src/common.h: container_of */
#include "config.h"
#include "fuzz.h"
#include "http.h"

/* The buffer size a worker uses for a head with the default
 * max_header_size (server.c io_buffer_size). */
#define FUZZ_IO_BUF 36864

/* The fixed config (parsed once), its proxy handler and its site's
 * response header ops. Aborts if the built-in text stops parsing. */
const cfg_t *fuzz_cfg(void);
const cfg_proxy_t *fuzz_proxy(void);
const cfg_hdr_ops_t *fuzz_site_header_ops(void);

/* Bytes collected for a later check; grows as needed. */
typedef struct fuzz_sink {
    char *p;
    size_t len, cap;
} fuzz_sink_t;

void fuzz_sink_put(fuzz_sink_t *s, const void *data, size_t len);
void fuzz_sink_free(fuzz_sink_t *s);

/* Appends LEN body bytes as FRAMING (enum http_framing) sends them: as
 * they are, or as one chunk, the way proxy.c add_body() queues them. */
void fuzz_put_body(fuzz_sink_t *s, int framing, const char *body, size_t len);

/* Appends the end of a body: the last chunk when chunked (proxy.c add_end). */
void fuzz_put_end(fuzz_sink_t *s, int framing);

/* Byte strings A and B are equal (either may be NULL when empty). */
static inline int fuzz_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Stops the fuzzer with MSG: an invariant of psproxy's own code broke. */
void fuzz_fail(const char *msg) __attribute__((noreturn));

/* The same, showing the LEN bytes at P (escaped) that broke it. */
void fuzz_fail_bytes(const char *msg, const char *p, size_t len) __attribute__((noreturn));

#endif
