/* What the workers share, used from several threads at once as psproxy's
 * worker threads and control loop use it: the certificate store swapped
 * under lookups, a config snapshot's round-robin counter, target tables
 * replaced and let go from any thread, health atomics flipped while
 * upstreams are picked. Checked here for results; scripts/test-tsan runs
 * it under ThreadSanitizer for races. Checks run on the main thread after
 * the join (a failed CHECK may not end a case from another thread). */
#include "certs.h"
#include "config.h"
#include "upstream.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "test.h"
#include "test_pki.h"

#define THREADS 4

/* ---- the certificate store -------------------------------------------- */

#define SWAPS 50

struct lookups {
    certs_t *store;
    atomic_int *done;
    long gets, missing, backwards, last;
};

/* A worker's handshakes: look the name up, read the certificate, let go. */
static void lookup_main(void *arg)
{
    struct lookups *l = arg;
    for (;;) {
        /* a lookup begun after DONE was seen comes after the last swap */
        int last_round = atomic_load(l->done);
        certs_entry_t *e = certs_get(l->store, "A.test");
        if (e == NULL) {
            l->missing++;
        } else {
            long serial = ASN1_INTEGER_get(X509_get0_serialNumber(e->leaf));
            if (serial < l->last)
                l->backwards++;
            l->last = serial;
            l->gets++;
            certs_entry_unref(e);
        }
        if (last_round)
            return;
    }
}

TEST(certificate_swaps_under_lookups_never_go_back)
{
    certs_t *store = certs_new();
    certs_entry_t *e = entry("a.test", 1);
    CHECK(e != NULL);
    certs_put(store, "a.test", e);
    certs_entry_unref(e);
    atomic_int done;
    atomic_init(&done, 0);
    struct lookups l[THREADS];
    uv_thread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        l[i] = (struct lookups){store, &done, 0, 0, 0, 0};
        CHECK_INT(uv_thread_create(&th[i], lookup_main, &l[i]), 0);
    }
    /* the control loop's swaps (SIGHUP, ACME), each entry freed by
     * whichever thread lets go of it last */
    for (long serial = 2; serial <= SWAPS; serial++) {
        e = entry("a.test", serial);
        certs_put(store, "a.test", e);
        certs_entry_unref(e);
    }
    atomic_store(&done, 1);
    for (int i = 0; i < THREADS; i++)
        uv_thread_join(&th[i]);
    certs_free(store);
    for (int i = 0; i < THREADS; i++) {
        CHECK(l[i].gets > 0);
        CHECK_INT(l[i].missing, 0);
        CHECK_INT(l[i].backwards, 0);
        CHECK_INT(l[i].last, SWAPS); /* the last lookups saw the last swap */
    }
}

/* ---- config snapshots, target tables, health ---------------------------- */

#define UPS 3
#define PICKS 3000

static cfg_t *load(void)
{
    char path[] = "/tmp/psproxy-test-threads-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    static const char text[] = "{\n\tadmin off\n}\n\nhttp://127.0.0.1:8080 {\n"
                               "\treverse_proxy 127.0.0.1:1 127.0.0.1:2 127.0.0.1:3 {\n"
                               "\t\tlb_policy round_robin\n\t}\n}\n";
    ssize_t w = write(fd, text, sizeof(text) - 1);
    close(fd);
    cfg_t *cfg = NULL;
    char err[512];
    if (w != (ssize_t)sizeof(text) - 1 || cfg_load(path, &cfg, err, sizeof(err)) != 0)
        fprintf(stderr, "  %s\n", err);
    unlink(path);
    return cfg;
}

static const cfg_proxy_t *proxy_of(const cfg_t *cfg)
{
    return &cfg->sites[0].handlers[0].u.proxy;
}

struct picker {
    cfg_t *cfg;             /* referenced: a worker's snapshot */
    up_targets_t *targets;  /* referenced: the worker's table */
    atomic_int *flapping;   /* another thread flips health while set */
    long counts[UPS], none; /* picks per upstream; no pick at all */
};

/* A worker: picks an upstream per request by round robin, then lets go of
 * its snapshot and table (a connection closing after a reload). */
static void pick_main(void *arg)
{
    struct picker *k = arg;
    up_pools_t ps;
    memset(&ps, 0, sizeof(ps)); /* round robin needs no pools */
    const cfg_proxy_t *p = proxy_of(k->cfg);
    for (int n = 0; n < PICKS || atomic_load(k->flapping); n++) {
        int why, i = up_select(&ps, p, k->targets, 0, "127.0.0.1", &why);
        if (i < 0 || i >= UPS)
            k->none++;
        else if (n < PICKS)
            k->counts[i]++;
    }
    up_targets_unref(k->targets);
    cfg_unref(k->cfg);
}

TEST(round_robin_counter_is_shared_exactly_by_the_workers)
{
    cfg_t *cfg = load();
    CHECK(cfg != NULL);
    up_targets_t *t = up_targets_new(cfg, NULL);
    CHECK_INT((int)t->n, UPS);
    atomic_int flapping;
    atomic_init(&flapping, 0);
    struct picker k[THREADS];
    uv_thread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        k[i] = (struct picker){cfg_ref(cfg), up_targets_ref(t), &flapping, {0}, 0};
        CHECK_INT(uv_thread_create(&th[i], pick_main, &k[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        uv_thread_join(&th[i]);
    long sum[UPS] = {0};
    for (int i = 0; i < THREADS; i++) {
        CHECK_INT(k[i].none, 0);
        for (int u = 0; u < UPS; u++)
            sum[u] += k[i].counts[u];
    }
    /* one counter, every increment counted: each upstream gets its third */
    for (int u = 0; u < UPS; u++)
        CHECK_INT(sum[u], THREADS * PICKS / UPS);
    up_targets_unref(t);
    cfg_unref(cfg);
}

TEST(tables_replaced_and_health_flipped_while_workers_pick)
{
    cfg_t *cfg = load();
    CHECK(cfg != NULL);
    up_targets_t *t = up_targets_new(cfg, NULL);
    /* passive settings of our own (copied before the workers touch rr_next) */
    cfg_proxy_t passive = *proxy_of(cfg);
    passive.fail_duration = 1;
    passive.max_fails = 1 << 30; /* counted in the window, out only when immediate */
    atomic_int flapping;
    atomic_init(&flapping, 1);
    struct picker k[THREADS];
    uv_thread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        k[i] = (struct picker){cfg_ref(cfg), up_targets_ref(t), &flapping, {0}, 0};
        CHECK_INT(uv_thread_create(&th[i], pick_main, &k[i]), 0);
    }
    /* the control loop: reloads (a new table sharing the targets, the old
     * one let go while workers still hold it), active verdicts flipping,
     * and a worker's passive failures */
    for (int round = 0; round < 2000; round++) {
        up_targets_t *next = up_targets_new(cfg, t);
        up_targets_unref(t);
        t = next;
        up_target_t *tg = t->items[round % UPS];
        atomic_store(&tg->active_down, !atomic_load(&tg->active_down));
        up_target_failed_at(tg, &passive, round % 200 == 0, "test", round);
    }
    atomic_store(&flapping, 0);
    for (int i = 0; i < THREADS; i++)
        uv_thread_join(&th[i]);
    for (int i = 0; i < THREADS; i++)
        CHECK_INT(k[i].none, 0); /* fail open: always someone to try */
    CHECK_INT((int)up_targets_live(), 1);
    up_targets_unref(t);
    CHECK_INT((int)up_targets_live(), 0);
    CHECK_INT((int)up_target_objects_live(), 0);
    cfg_unref(cfg);
}

TEST_MAIN()
