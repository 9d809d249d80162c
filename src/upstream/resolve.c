/* The per-worker answer cache of upstream names: expiry, invalidation by a
 * failed dial, and whether a name moved (resolve.h). */
#include "resolve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

int res_fresh(const res_answer_t *a, int64_t now)
{
    return now < a->expires;
}

static int same_addr(const struct sockaddr *x, const struct sockaddr *y)
{
    if (x->sa_family != y->sa_family)
        return 0;
    if (x->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)x, *b = (const void *)y;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (x->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)x, *b = (const void *)y;
        return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
               memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
    }
    return 0;
}

int res_contains(const res_answer_t *a, const struct sockaddr *sa)
{
    for (int i = 0; i < a->n_addrs; i++)
        if (same_addr((const struct sockaddr *)&a->addrs[i], sa))
            return 1;
    return 0;
}

int res_store(res_answer_t *a, int err, const struct addrinfo *list, int64_t now)
{
    a->expires = now + RES_TTL_MS;
    a->err = err;
    if (err != 0)
        return 0;
    struct sockaddr_storage next[RES_MAX_ADDRS];
    int n = 0;
    for (const struct addrinfo *ai = list; ai != NULL && n < RES_MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(next[0]))
            continue;
        memset(&next[n], 0, sizeof(next[n]));
        memcpy(&next[n], ai->ai_addr, ai->ai_addrlen);
        n++;
    }
    if (n == 0) {
        a->err = UV_EAI_NODATA; /* a name with no IPv4 or IPv6 address */
        return 0;
    }
    /* the same set in another order (DNS round robin) is no move */
    int changed = n != a->n_addrs;
    for (int i = 0; i < n && !changed; i++)
        changed = !res_contains(a, (const struct sockaddr *)&next[i]);
    memcpy(a->addrs, next, (size_t)n * sizeof(next[0]));
    a->n_addrs = n;
    if (changed)
        a->gen++;
    return changed;
}

void res_store_literal(res_answer_t *a, const struct sockaddr *sa)
{
    memset(a, 0, sizeof(*a));
    memcpy(&a->addrs[0], sa,
           sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    a->n_addrs = 1;
    a->expires = INT64_MAX;
}

void res_drop(res_answer_t *a)
{
    if (a->expires != INT64_MAX) /* a literal has nothing to look up */
        a->expires = 0;
}

void res_addr_name(const res_answer_t *a, int i, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    const struct sockaddr *sa = (const struct sockaddr *)&a->addrs[i];
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    snprintf(out, size, sa->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
}
