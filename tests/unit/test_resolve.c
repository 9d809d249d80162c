/* Unit tests for the per-worker answer cache of upstream names: how long
 * an answer is reused, what a failed lookup or dial does to it, and when a
 * new answer counts as the name having moved. */
#include "resolve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <uv.h>

#include "test.h"

/* A getaddrinfo-shaped list of up to 4 IPv4 addresses on PORT. */
struct list {
    struct addrinfo ai[4];
    struct sockaddr_in sa[4];
};

static const struct addrinfo *list_of(struct list *l, int port, int n, const char **ips)
{
    memset(l, 0, sizeof(*l));
    for (int i = 0; i < n; i++) {
        l->sa[i].sin_family = AF_INET;
        l->sa[i].sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ips[i], &l->sa[i].sin_addr);
        l->ai[i].ai_family = AF_INET;
        l->ai[i].ai_socktype = SOCK_STREAM;
        l->ai[i].ai_addr = (struct sockaddr *)&l->sa[i];
        l->ai[i].ai_addrlen = sizeof(l->sa[i]);
        l->ai[i].ai_next = i + 1 < n ? &l->ai[i + 1] : NULL;
    }
    return n > 0 ? &l->ai[0] : NULL;
}

static struct sockaddr_in addr(const char *ip, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

TEST(a_name_never_looked_up_is_not_fresh)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    CHECK(!res_fresh(&a, 0));
    CHECK(!res_fresh(&a, 123456));
}

TEST(an_answer_is_reused_for_its_ttl_then_looked_up_again)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    struct list l;
    const char *ips[] = {"10.0.0.5"};
    res_store(&a, 0, list_of(&l, 8080, 1, ips), 5000);
    CHECK_INT(a.n_addrs, 1);
    CHECK_INT(a.err, 0);
    CHECK(res_fresh(&a, 5000));
    CHECK(res_fresh(&a, 5000 + RES_TTL_MS - 1));
    CHECK(!res_fresh(&a, 5000 + RES_TTL_MS));
    char name[64];
    res_addr_name(&a, 0, name, sizeof(name));
    CHECK_STR(name, "10.0.0.5:8080");
}

TEST(a_failed_dial_drops_the_answer_at_once)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    struct list l;
    const char *ips[] = {"10.0.0.5"};
    res_store(&a, 0, list_of(&l, 80, 1, ips), 1000);
    CHECK(res_fresh(&a, 1001));
    res_drop(&a);
    CHECK(!res_fresh(&a, 1001));
    /* the addresses stay: pooled connections are judged against them */
    CHECK_INT(a.n_addrs, 1);
}

TEST(a_failed_lookup_is_kept_for_the_ttl_and_keeps_the_addresses)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    struct list l;
    const char *ips[] = {"10.0.0.5"};
    res_store(&a, 0, list_of(&l, 80, 1, ips), 1000);
    uint32_t gen = a.gen;
    CHECK_INT(res_store(&a, UV_EAI_NONAME, NULL, 3000), 0);
    CHECK_INT(a.err, UV_EAI_NONAME);
    CHECK(res_fresh(&a, 3000 + RES_TTL_MS - 1)); /* no lookup per request */
    CHECK(!res_fresh(&a, 3000 + RES_TTL_MS));
    CHECK_INT(a.n_addrs, 1);
    CHECK_INT(a.gen, gen);
    /* resolving again to the same address is no move */
    CHECK_INT(res_store(&a, 0, list_of(&l, 80, 1, ips), 4000), 0);
    CHECK_INT(a.err, 0);
    CHECK_INT(a.gen, gen);
}

TEST(a_name_with_no_usable_address_is_an_error)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    CHECK_INT(res_store(&a, 0, NULL, 0), 0);
    CHECK_INT(a.err, UV_EAI_NODATA);
    CHECK(res_fresh(&a, 0));
}

TEST(a_new_address_moves_the_name_the_same_set_reordered_does_not)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    struct list l;
    const char *ab[] = {"10.0.0.1", "10.0.0.2"}, *ba[] = {"10.0.0.2", "10.0.0.1"};
    const char *ac[] = {"10.0.0.1", "10.0.0.3"}, *one[] = {"10.0.0.1"};
    CHECK_INT(res_store(&a, 0, list_of(&l, 80, 2, ab), 0), 1); /* first answer */
    uint32_t gen = a.gen;
    CHECK_INT(res_store(&a, 0, list_of(&l, 80, 2, ba), 1000), 0); /* DNS round robin */
    CHECK_INT(a.gen, gen);
    CHECK_INT(res_store(&a, 0, list_of(&l, 80, 2, ac), 2000), 1);
    CHECK(a.gen != gen);
    gen = a.gen;
    CHECK_INT(res_store(&a, 0, list_of(&l, 80, 1, one), 3000), 1); /* one gone */
    CHECK(a.gen != gen);
    struct sockaddr_in x = addr("10.0.0.1", 80), y = addr("10.0.0.3", 80), z = addr("10.0.0.1", 81);
    CHECK(res_contains(&a, (struct sockaddr *)&x));
    CHECK(!res_contains(&a, (struct sockaddr *)&y));
    CHECK(!res_contains(&a, (struct sockaddr *)&z)); /* the port counts */
}

TEST(at_most_res_max_addrs_are_kept)
{
    res_answer_t a;
    memset(&a, 0, sizeof(a));
    struct addrinfo ai[RES_MAX_ADDRS + 3];
    struct sockaddr_in sa[RES_MAX_ADDRS + 3];
    memset(ai, 0, sizeof(ai));
    for (int i = 0; i < RES_MAX_ADDRS + 3; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.1.%d", i + 1);
        sa[i] = addr(ip, 80);
        ai[i].ai_family = AF_INET;
        ai[i].ai_addr = (struct sockaddr *)&sa[i];
        ai[i].ai_addrlen = sizeof(sa[i]);
        ai[i].ai_next = i + 1 < RES_MAX_ADDRS + 3 ? &ai[i + 1] : NULL;
    }
    res_store(&a, 0, ai, 0);
    CHECK_INT(a.n_addrs, RES_MAX_ADDRS);
}

TEST(a_literal_never_expires_and_a_failed_dial_does_not_drop_it)
{
    res_answer_t a;
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(443);
    inet_pton(AF_INET6, "::1", &sa.sin6_addr);
    res_store_literal(&a, (struct sockaddr *)&sa);
    CHECK(res_fresh(&a, INT64_MAX - 1));
    res_drop(&a);
    CHECK(res_fresh(&a, INT64_MAX - 1));
    CHECK(res_contains(&a, (struct sockaddr *)&sa));
    char name[64];
    res_addr_name(&a, 0, name, sizeof(name));
    CHECK_STR(name, "[::1]:443");
}

TEST_MAIN()
