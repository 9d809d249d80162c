/* JSON syntax: whether bytes are one JSON text (RFC 8259), as Go's
 * encoding/json Valid judges it, for Caddy's respond Content-Type rule. */
#ifndef PS_JSON_H
#define PS_JSON_H

#include <stddef.h>

/* Containers nested deeper than this are refused, as Go's scanner does. */
#define JSON_MAX_DEPTH 10000

/* Returns 1 when S[0..LEN) is exactly one JSON value with optional
 * whitespace around it, 0 otherwise. Strings may hold any byte from 0x20
 * up (Go does not check UTF-8 here either). No allocation; reentrant. */
int json_valid(const char *s, size_t len);

#endif
