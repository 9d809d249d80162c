/* Renewal arithmetic: when a certificate is due, when to ask ARI again, how
 * long to back off after failures, and the time formats ACME servers send.
 * Pure functions: times are int64 Unix seconds, randomness comes in as a
 * uint32_t so callers (and tests) choose it. */
#ifndef PS_RENEW_H
#define PS_RENEW_H

#include <stdint.h>

/* The renewal time without ARI: when a third of the lifetime is left, or
 * half for certificates shorter than 10 days. NOT_AFTER <= NOT_BEFORE (a
 * certificate never valid) gives NOT_AFTER: renew at once. */
int64_t renew_due_by_lifetime(int64_t not_before, int64_t not_after);

/* ARI (RFC 9773): a time chosen uniformly in [START, END] by RND;
 * rnd 0 gives START, UINT32_MAX gives END; START >= END gives START. */
int64_t renew_pick_in_window(int64_t start, int64_t end, uint32_t rnd);

/* When to fetch renewalInfo next: NOW + RETRY_AFTER clamped to [60 s, 1 day],
 * or NOW + 6 h when the CA sent none (RETRY_AFTER < 0). */
int64_t renew_ari_refetch(int64_t now, int64_t retry_after);

/* The delay in seconds before the next attempt after FAILURES consecutive
 * failures (1, 2, ...): 1 min, 10 min, 100 min, then 1 day (Let's Encrypt's
 * advice), each +-10 % by RND (0 the shortest, UINT32_MAX the longest), but
 * never less than RETRY_AFTER when the CA sent one (>= 0). FAILURES <= 0
 * means no back-off: 0, or RETRY_AFTER. */
int64_t renew_backoff(int failures, int64_t retry_after, uint32_t rnd);

/* An HTTP Retry-After value (RFC 9110 10.2.3) as seconds from NOW: either
 * delta-seconds or an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"); a date
 * in the past gives 0. -1 when unparseable, including the obsolete RFC 850
 * and asctime date forms, which no ACME server sends. */
int64_t renew_parse_retry_after(const char *value, int64_t now);

/* An RFC 3339 date-time ("2025-01-02T04:00:00Z", optional fractional
 * seconds, which are dropped, and offsets like "+01:00") as Unix seconds.
 * -1 on any error and for times before 1970, which ACME never uses. */
int64_t renew_parse_rfc3339(const char *s);

#endif
