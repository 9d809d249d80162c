/* Renewal arithmetic: due times, ARI windows, back-off, and the parsers for
 * the time formats in ACME responses (RFC 3339 bodies, Retry-After). */
#include "renew.h"

#include <stddef.h>
#include <string.h>

#define RENEW_DAY 86400
#define RENEW_ARI_MIN 60
#define RENEW_ARI_MAX RENEW_DAY
#define RENEW_ARI_DEFAULT (6 * 3600)
/* Keeps NOW + a parsed delay far from overflow whatever the CA sends. */
#define RENEW_MAX_DELAY INT32_MAX

int64_t renew_due_by_lifetime(int64_t not_before, int64_t not_after)
{
    uint64_t life;

    if (not_after <= not_before)
        return not_after;
    /* Unsigned: the difference of two int64 may not fit in one. */
    life = (uint64_t)not_after - (uint64_t)not_before;
    return not_after - (int64_t)(life < 10 * RENEW_DAY ? life / 2 : life / 3);
}

int64_t renew_pick_in_window(int64_t start, int64_t end, uint32_t rnd)
{
    uint64_t span, off;

    if (start >= end)
        return start;
    span = (uint64_t)end - (uint64_t)start;
    /* span * rnd / UINT32_MAX without a 96-bit product: split span by the
     * divisor; the remainder's product fits in 64 bits. */
    off = span / UINT32_MAX * rnd + span % UINT32_MAX * rnd / UINT32_MAX;
    return (int64_t)((uint64_t)start + off);
}

int64_t renew_ari_refetch(int64_t now, int64_t retry_after)
{
    int64_t d = retry_after;

    if (d < 0)
        d = RENEW_ARI_DEFAULT;
    else if (d < RENEW_ARI_MIN)
        d = RENEW_ARI_MIN;
    else if (d > RENEW_ARI_MAX)
        d = RENEW_ARI_MAX;
    return now + d;
}

int64_t renew_backoff(int failures, int64_t retry_after, uint32_t rnd)
{
    static const int64_t steps[] = {60, 600, 6000, RENEW_DAY};
    int64_t base, d = 0;

    if (failures > 0) {
        base = steps[failures < 4 ? failures - 1 : 3];
        /* Jitter keeps many names that failed together (a CA outage) from
         * retrying in lockstep. */
        d = renew_pick_in_window(base - base / 10, base + base / 10, rnd);
    }
    if (retry_after >= 0 && d < retry_after)
        d = retry_after;
    return d;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), so parsing needs neither timegm() nor the TZ. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* Exactly N digits at *P into *OUT; advances *P. 0, or -1 when a
 * character is no digit. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Checks a date and time of day and gives Unix seconds, or -1 when it is
 * no such date or time. Second 60 is a leap second (RFC 3339 5.6); it
 * counts as the next minute's :00. */
static int64_t civil_to_unix(int y, int mo, int d, int h, int mi, int s)
{
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60)
        return -1;
    return days_from_civil(y, mo, d) * RENEW_DAY + h * 3600 + mi * 60 + s;
}

int64_t renew_parse_rfc3339(const char *s)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    int64_t t;

    if (s == NULL)
        return -1;
    if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) || *s++ != '-' || digits(&s, 2, &d))
        return -1;
    /* RFC 3339 5.6 allows "t"; its NOTE allows a space. */
    if (*s != 'T' && *s != 't' && *s != ' ')
        return -1;
    s++;
    if (digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi) || *s++ != ':' ||
        digits(&s, 2, &sec))
        return -1;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        sign = *s++ == '+' ? 1 : -1;
        if (digits(&s, 2, &oh) || *s++ != ':' || digits(&s, 2, &om) || oh > 23 || om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*s != '\0')
        return -1;
    t = civil_to_unix(y, mo, d, h, mi, sec);
    if (t < 0)
        return -1;
    /* Local time = UTC + offset. */
    t -= sign * (oh * 3600 + om * 60);
    return t < 0 ? -1 : t;
}

/* IMF-fixdate (RFC 9110 5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT", case
 * sensitive, as Unix seconds, or -1 when S is not one. The day name is
 * checked for form, not against the date. */
static int64_t parse_imf_fixdate(const char *s, size_t len)
{
    static const char *const wdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int y, mo = 0, d, h, mi, sec, ok = 0;
    const char *p = s;

    if (len != 29)
        return -1;
    for (size_t i = 0; i < 7; i++)
        ok |= memcmp(p, wdays[i], 3) == 0;
    if (!ok || memcmp(p + 3, ", ", 2) != 0)
        return -1;
    p += 5;
    if (digits(&p, 2, &d) || *p++ != ' ')
        return -1;
    for (int i = 0; i < 12; i++) {
        if (memcmp(p, months[i], 3) == 0)
            mo = i + 1;
    }
    p += 3;
    if (mo == 0 || *p++ != ' ' || digits(&p, 4, &y) || *p++ != ' ')
        return -1;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec) || memcmp(p, " GMT", 4) != 0)
        return -1;
    /* Second 60: RFC 9110 5.6.7 allows a leap second, as RFC 3339 does. */
    return civil_to_unix(y, mo, d, h, mi, sec);
}

int64_t renew_parse_retry_after(const char *value, int64_t now)
{
    const char *p, *end;
    int64_t v = 0, t;

    if (value == NULL)
        return -1;
    /* Field values arrive without surrounding whitespace from a good
     * parser, but OWS is cheap to forgive (RFC 9110 5.5). */
    p = value + strspn(value, " \t");
    end = p + strlen(p);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (p == end)
        return -1;
    if (*p >= '0' && *p <= '9') {
        for (const char *q = p; q < end; q++) {
            if (*q < '0' || *q > '9')
                return -1;
            /* Saturate rather than fail: a huge delay still means "later". */
            if (v < RENEW_MAX_DELAY)
                v = v * 10 + (*q - '0');
        }
        return v < RENEW_MAX_DELAY ? v : RENEW_MAX_DELAY;
    }
    t = parse_imf_fixdate(p, (size_t)(end - p));
    if (t < 0)
        return -1;
    if (t <= now)
        return 0;
    return t - now < RENEW_MAX_DELAY ? t - now : RENEW_MAX_DELAY;
}
