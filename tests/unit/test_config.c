/* Unit tests for the Caddyfile parser (config/caddyfile.c) and the
 * configuration built from it (the rest of src/config/): each case is one
 * behaviour, with Caddy 2.6's meaning checked against `caddy adapt`. Runs
 * with workdir tests/unit. */
#include "config.h"

#include <stdlib.h>

#include "common.h"
#include "test.h"

#include <arpa/inet.h>

static char last_err[1024];

/* Parses TEXT as t.conf; NULL (and the message on stderr) on error. */
static cfg_t *parse(const char *text)
{
    cfg_t *cfg = NULL;
    if (cfg_parse("t.conf", text, strlen(text), &cfg, last_err, sizeof(last_err)) != 0) {
        fprintf(stderr, "  unexpected error: %s\n", last_err);
        return NULL;
    }
    return cfg;
}

/* Whether TEXT fails with exactly WANT. */
static int fails_with(const char *text, const char *want)
{
    cfg_t *cfg = NULL;
    int rc = cfg_parse("t.conf", text, strlen(text), &cfg, last_err, sizeof(last_err));
    if (rc != PS_ECONFIG || cfg != NULL) {
        fprintf(stderr, "  parsed, expected error: %s\n", want);
        cfg_unref(cfg);
        return 0;
    }
    if (strcmp(last_err, want) != 0) {
        fprintf(stderr, "  error \"%s\"\n  expected \"%s\"\n", last_err, want);
        return 0;
    }
    return 1;
}

#define CHECK_ERR(text, want) CHECK(fails_with((text), (want)))

static int load_fails_with(const char *path, const char *want)
{
    cfg_t *cfg = NULL;
    int rc = cfg_load(path, &cfg, last_err, sizeof(last_err));
    if (rc != PS_ECONFIG || cfg != NULL) {
        cfg_unref(cfg);
        return 0;
    }
    if (strcmp(last_err, want) != 0) {
        fprintf(stderr, "  error \"%s\"\n  expected \"%s\"\n", last_err, want);
        return 0;
    }
    return 1;
}

/* The template flattened back with long placeholder names. */
static const char *tmpl_str(const cfg_tmpl_t *t)
{
    static char buf[512];
    static const char *const names[] = {
        "",
        "host",
        "hostport",
        "uri",
        "path",
        "query",
        "method",
        "scheme",
        "remote_host",
        "remote_port",
        "upstream_hostport",
    };
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < t->n_parts && n < sizeof(buf) - 40; i++) {
        if (t->parts[i].var == CFG_VAR_NONE)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%.*s", (int)t->parts[i].len,
                                  t->parts[i].lit);
        else
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "<%s>", names[t->parts[i].var]);
    }
    return buf;
}

/* ---- global options ---- */

TEST(defaults_without_global_options)
{
    cfg_t *c = parse(":8080 {\n\trespond hi\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->admin_off, 0);
    CHECK_STR(c->admin_addr, "localhost:2019");
    CHECK_INT(c->http_port, 80);
    CHECK_INT(c->https_port, 443);
    CHECK(c->email == NULL);
    CHECK(c->acme_ca == NULL);
    CHECK(c->storage_root == NULL);
    CHECK_INT(c->grace_period, 0);
    CHECK_INT(c->auto_https, CFG_AUTO_HTTPS_ON);
    CHECK_INT(c->workers, 0);
    CHECK_INT(c->timeouts.read_header, 30000);
    CHECK_INT(c->timeouts.read_body, 60000);
    CHECK_INT(c->timeouts.write, 60000);
    CHECK_INT(c->timeouts.idle, 300000);
    CHECK_INT(c->max_header_size, 32768);
    CHECK_INT(atomic_load(&c->refcnt), 1);
    cfg_unref(c);
}

TEST(global_options_all)
{
    cfg_t *c = parse("{\n"
                     "\tadmin off\n"
                     "\thttp_port 8080\n"
                     "\thttps_port 8443\n"
                     "\temail ops@example.com\n"
                     "\tacme_ca https://acme.test/dir\n"
                     "\tacme_ca_root /etc/ca.pem\n"
                     "\tstorage file_system /var/lib/psproxy\n"
                     "\tgrace_period 1m30s\n"
                     "\tauto_https disable_redirects\n"
                     "\tworkers 4\n"
                     "\tservers {\n"
                     "\t\ttimeouts {\n"
                     "\t\t\tread_header 5s\n"
                     "\t\t\tread_body 10s\n"
                     "\t\t\twrite 1.5s\n"
                     "\t\t\tidle 2m\n"
                     "\t\t}\n"
                     "\t\tmax_header_size 16KiB\n"
                     "\t}\n"
                     "}\n"
                     ":9000 {\n\trespond hi\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->admin_off, 1);
    CHECK_INT(c->http_port, 8080);
    CHECK_INT(c->https_port, 8443);
    CHECK_STR(c->email, "ops@example.com");
    CHECK_STR(c->acme_ca, "https://acme.test/dir");
    CHECK_STR(c->acme_ca_root, "/etc/ca.pem");
    CHECK_STR(c->storage_root, "/var/lib/psproxy");
    CHECK_INT(c->grace_period, 90000);
    CHECK_INT(c->auto_https, CFG_AUTO_HTTPS_DISABLE_REDIRECTS);
    CHECK_INT(c->workers, 4);
    CHECK_INT(c->timeouts.read_header, 5000);
    CHECK_INT(c->timeouts.read_body, 10000);
    CHECK_INT(c->timeouts.write, 1500);
    CHECK_INT(c->timeouts.idle, 120000);
    CHECK_INT(c->max_header_size, 16384);
    cfg_unref(c);
}

TEST(admin_address)
{
    cfg_t *c = parse("{\n\tadmin localhost:2020\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->admin_off, 0);
        CHECK_STR(c->admin_addr, "localhost:2020");
        CHECK_INT(c->n_sites, 0);
        cfg_unref(c);
    }
}

TEST(auto_https_off)
{
    cfg_t *c = parse("{\n\tauto_https off\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->auto_https, CFG_AUTO_HTTPS_OFF);
        cfg_unref(c);
    }
    CHECK_ERR("{\n\tauto_https ignore_loaded_certs\n}\n",
              "t.conf:2: auto_https: expected off or disable_redirects, got "
              "\"ignore_loaded_certs\"");
}

TEST(storage_block_form)
{
    cfg_t *c = parse("{\n\tstorage file_system {\n\t\troot /data/caddy\n\t}\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->storage_root, "/data/caddy");
        cfg_unref(c);
    }
}

TEST(storage_errors)
{
    CHECK_ERR("{\n\tstorage redis\n}\n",
              "t.conf:2: storage: redis: not supported by psproxy (file_system, postgres)");
    CHECK_ERR("{\n\tstorage file_system\n}\n",
              "t.conf:2: storage: file_system: expected a path or a block");
    CHECK_ERR("{\n\tstorage file_system {\n\t\tpath /x\n\t}\n}\n",
              "t.conf:3: storage: file_system: path: not supported by psproxy");
    CHECK_ERR("{\n\tstorage\n}\n", "t.conf:2: storage: expected a module name");
}

TEST(durations_follow_go_and_caddy_days)
{
    static const struct {
        const char *in;
        uint64_t ms;
    } ok[] = {
        {"300ms", 300},     {"1.5s", 1500},      {"2m", 120000}, {"1h30m", 5400000},
        {"1d", 86400000},   {"1.5d", 129600000}, {"0", 0},       {"500us", 1},
        {"1d2h", 93600000}, {"+3s", 3000},       {"0.25s", 250}, {"1h0m0.5s", 3600500},
    };
    for (size_t i = 0; i < PS_ARRAY_SIZE(ok); i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\n\tgrace_period %s\n}\n", ok[i].in);
        cfg_t *c = parse(text);
        CHECK(c != NULL);
        if (c) {
            CHECK_INT(c->grace_period, ok[i].ms);
            cfg_unref(c);
        }
    }
}

TEST(duration_errors)
{
    CHECK_ERR("{\n\tgrace_period 5\n}\n",
              "t.conf:2: grace_period: expected a duration like 30s or 1m30s, got \"5\"");
    CHECK_ERR("{\n\tgrace_period -1s\n}\n",
              "t.conf:2: grace_period: expected a duration like 30s or 1m30s, got \"-1s\"");
    CHECK_ERR("{\n\tgrace_period 1x\n}\n",
              "t.conf:2: grace_period: expected a duration like 30s or 1m30s, got \"1x\"");
    CHECK_ERR("{\n\tgrace_period\n}\n", "t.conf:2: grace_period: expected an argument");
    CHECK_ERR("{\n\tgrace_period 1s 2s\n}\n", "t.conf:2: grace_period: unexpected argument \"2s\"");
    CHECK_ERR("{\n\tgrace_period 99999999999999h\n}\n",
              "t.conf:2: grace_period: expected a duration like 30s or 1m30s, got "
              "\"99999999999999h\"");
}

TEST(sizes_follow_humanize)
{
    static const struct {
        const char *in;
        size_t v;
    } ok[] = {
        {"16KB", 16000}, {"16KiB", 16384}, {"1MB", 1000000},      {"1MiB", 1048576}, {"100", 100},
        {"16kb", 16000}, {"1.5KB", 1500},  {"\"16 KiB\"", 16384}, {"2k", 2000},      {"64b", 64},
    };
    for (size_t i = 0; i < PS_ARRAY_SIZE(ok); i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\n\tservers {\n\t\tmax_header_size %s\n\t}\n}\n", ok[i].in);
        cfg_t *c = parse(text);
        CHECK(c != NULL);
        if (c) {
            CHECK_INT(c->max_header_size, ok[i].v);
            cfg_unref(c);
        }
    }
}

TEST(size_errors)
{
    CHECK_ERR("{\n\tservers {\n\t\tmax_header_size lots\n\t}\n}\n",
              "t.conf:3: max_header_size: expected a size like 16KiB (1 byte to 1GiB), got "
              "\"lots\"");
    CHECK_ERR("{\n\tservers {\n\t\tmax_header_size 0\n\t}\n}\n",
              "t.conf:3: max_header_size: expected a size like 16KiB (1 byte to 1GiB), got \"0\"");
    CHECK_ERR("{\n\tservers {\n\t\tmax_header_size 2GB\n\t}\n}\n",
              "t.conf:3: max_header_size: expected a size like 16KiB (1 byte to 1GiB), got "
              "\"2GB\"");
    CHECK_ERR("{\n\tservers {\n\t\tmax_header_size 16 KB\n\t}\n}\n",
              "t.conf:3: max_header_size: unexpected argument \"KB\"");
}

TEST(port_options_errors)
{
    CHECK_ERR("{\n\thttp_port eighty\n}\n",
              "t.conf:2: http_port: expected a port number, got \"eighty\"");
    CHECK_ERR("{\n\thttps_port 70000\n}\n",
              "t.conf:2: https_port: expected a port number, got \"70000\"");
    CHECK_ERR("{\n\thttp_port 0\n}\n", "t.conf:2: http_port: expected a port number, got \"0\"");
    CHECK_ERR("{\n\thttp_port\n}\n", "t.conf:2: http_port: expected an argument");
}

TEST(workers_option)
{
    CHECK_ERR("{\n\tworkers 0\n}\n",
              "t.conf:2: workers: expected a number from 1 to 1024, got \"0\"");
    CHECK_ERR("{\n\tworkers many\n}\n",
              "t.conf:2: workers: expected a number from 1 to 1024, got \"many\"");
    CHECK_ERR("{\n\tworkers 2 {\n\t}\n}\n", "t.conf:2: workers: unexpected block");
}

TEST(servers_errors)
{
    CHECK_ERR(
        "{\n\tservers :443 {\n\t\tmax_header_size 1k\n\t}\n}\n",
        "t.conf:2: servers: options for one listener (\":443\") are not supported by psproxy");
    CHECK_ERR("{\n\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n}\n",
              "t.conf:3: protocols: h3 is not supported by psproxy (h1, h2)");
    CHECK_ERR("{\n\tservers {\n\t\tprotocols h2\n\t}\n}\n",
              "t.conf:3: protocols: psproxy always serves h1 (HTTP/1.1); list it with h2");
    CHECK_ERR("{\n\tservers {\n\t\tprotocols\n\t}\n}\n",
              "t.conf:3: protocols: expected an argument");
    CHECK_ERR("{\n\tservers {\n\t\tkeepalive_interval 5s\n\t}\n}\n",
              "t.conf:3: servers: keepalive_interval: not supported by psproxy");
    CHECK_ERR("{\n\tservers {\n\t\ttimeouts {\n\t\t\tread 5s\n\t\t}\n\t}\n}\n",
              "t.conf:4: servers: timeouts: read: not supported by psproxy");
    CHECK_ERR("{\n\tservers\n}\n", "t.conf:2: servers: expected a block");
}

TEST(servers_protocols)
{
    cfg_t *c = parse("{\n\tservers {\n\t\tprotocols h1\n\t}\n}\n:80 {\n\trespond hi\n}\n");
    CHECK(c != NULL && c->protocols == CFG_PROTO_H1);
    cfg_unref(c);
    c = parse(":80 {\n\trespond hi\n}\n");
    CHECK(c != NULL && c->protocols == (CFG_PROTO_H1 | CFG_PROTO_H2)); /* Caddy's default */
    cfg_unref(c);
}

TEST(storage_postgres)
{
    cfg_t *c = parse("{\n\tstorage postgres {\n\t\tdsn \"host=db user=ps password=s3cret\"\n"
                     "\t\tkey_file /etc/psproxy/storage.key\n\t\tcache /var/cache/ps\n\t}\n}\n"
                     ":80 {\n\trespond hi\n}\n");
    CHECK(c != NULL && c->storage_kind == CFG_STORAGE_POSTGRES);
    CHECK_STR(c->storage_dsn, "host=db user=ps password=s3cret");
    CHECK_STR(c->storage_key_file, "/etc/psproxy/storage.key");
    CHECK_STR(c->storage_root, "/var/cache/ps");
    cfg_unref(c);
    CHECK_ERR("{\n\tstorage postgres {\n\t\tkey_file /k\n\t}\n}\n",
              "t.conf:2: storage: postgres: expected dsn (a libpq connection string or "
              "postgres:// URL; {$ENV} for the password)");
    CHECK_ERR("{\n\tstorage postgres {\n\t\tdsn x\n\t}\n}\n",
              "t.conf:2: storage: postgres: expected key_file PATH (the key that seals private "
              "keys in the database: openssl rand -hex 32)");
    CHECK_ERR("{\n\tstorage postgres {\n\t\tdsn x\n\t\tkey_file /k\n\t\tprefix p\n\t}\n}\n",
              "t.conf:5: storage: postgres: prefix: not supported by psproxy (dsn, key_file, cache)");
    CHECK_ERR("{\n\tstorage postgres\n}\n",
              "t.conf:2: storage: postgres: expected a block with dsn and key_file");
    CHECK_ERR("{\n\tstorage redis {\n\t}\n}\n",
              "t.conf:2: storage: redis: not supported by psproxy (file_system, postgres)");
}

static const char *redact(const char *dsn)
{
    static char out[256];
    cfg_redact_dsn(dsn, out, sizeof(out));
    return out;
}

TEST(dsn_passwords_are_redacted)
{
    CHECK_STR(redact("host=db user=ps password=s3cret dbname=x"),
              "host=db user=ps password=*** dbname=x");
    CHECK_STR(redact("password = 'a b\\' c' host=db"), "password = *** host=db");
    CHECK_STR(redact("postgres://ps:s3cret@db:5432/x?sslmode=require"),
              "postgres://ps:***@db:5432/x?sslmode=require");
    CHECK_STR(redact("postgresql://ps@db/x?password=s3cret&sslmode=require"),
              "postgresql://ps@db/x?password=***&sslmode=require");
    CHECK_STR(redact("host=db user=ps"), "host=db user=ps");
    CHECK_STR(redact("host=db passwordfile=/x"), "host=db passwordfile=/x");
}

TEST(unknown_global_option)
{
    CHECK_ERR("{\n\tdebug\n}\n", "t.conf:2: debug: global option not supported by psproxy");
    CHECK_ERR("{\n\torder foo before bar\n}\n",
              "t.conf:2: order: global option not supported by psproxy");
}

TEST(global_block_must_come_first)
{
    CHECK_ERR(":80 {\n\trespond hi\n}\n{\n\tadmin off\n}\n",
              "t.conf:4: a block without addresses is the global options block and must come "
              "first");
}

/* ---- addresses ---- */

/* Listeners that serve sites: the redirect-only one on http_port left out. */
static size_t served(const cfg_t *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_listeners; i++)
        n += c->listeners[i].n_sites > 0;
    return n;
}

static int addr_is(const char *key, int scheme, const char *host, int port)
{
    char text[256];
    snprintf(text, sizeof(text), "%s {\n\trespond hi\n}\n", key);
    cfg_t *c = parse(text);
    if (c == NULL)
        return 0;
    int ok = c->n_sites == 1 && c->sites[0].n_addrs == 1 && c->sites[0].addrs[0].scheme == scheme &&
             strcmp(c->sites[0].addrs[0].host, host) == 0 && c->sites[0].addrs[0].port == port &&
             served(c) == 1 && c->listeners[0].port == port &&
             c->listeners[0].scheme == scheme;
    if (!ok)
        fprintf(stderr, "  %s: got scheme %d host \"%s\" port %d\n", key,
                c->sites[0].addrs[0].scheme, c->sites[0].addrs[0].host, c->sites[0].addrs[0].port);
    cfg_unref(c);
    return ok;
}

TEST(address_host_defaults_to_https_443)
{
    CHECK(addr_is("example.com", CFG_SCHEME_HTTPS, "example.com", 443));
    CHECK(addr_is("localhost", CFG_SCHEME_HTTPS, "localhost", 443));
    CHECK(addr_is("127.0.0.1", CFG_SCHEME_HTTPS, "127.0.0.1", 443));
}

TEST(address_host_lower_cased)
{
    CHECK(addr_is("Example.COM", CFG_SCHEME_HTTPS, "example.com", 443));
}

TEST(address_host_port_scheme_from_port)
{
    CHECK(addr_is("example.com:80", CFG_SCHEME_HTTP, "example.com", 80));
    CHECK(addr_is("example.com:443", CFG_SCHEME_HTTPS, "example.com", 443));
    CHECK(addr_is("example.com:8443", CFG_SCHEME_HTTPS, "example.com", 8443));
}

TEST(address_explicit_scheme_wins)
{
    CHECK(addr_is("http://example.com", CFG_SCHEME_HTTP, "example.com", 80));
    CHECK(addr_is("https://example.com", CFG_SCHEME_HTTPS, "example.com", 443));
    CHECK(addr_is("http://example.com:8080", CFG_SCHEME_HTTP, "example.com", 8080));
    CHECK(addr_is("https://example.com:8080", CFG_SCHEME_HTTPS, "example.com", 8080));
}

TEST(address_port_only_is_http_unless_https_port)
{
    CHECK(addr_is(":8080", CFG_SCHEME_HTTP, "", 8080));
    CHECK(addr_is(":80", CFG_SCHEME_HTTP, "", 80));
    CHECK(addr_is(":443", CFG_SCHEME_HTTPS, "", 443));
    CHECK(addr_is("http://:9000", CFG_SCHEME_HTTP, "", 9000));
    CHECK(addr_is("https://:9443", CFG_SCHEME_HTTPS, "", 9443));
    CHECK(addr_is("http://", CFG_SCHEME_HTTP, "", 80));
    CHECK(addr_is("https://", CFG_SCHEME_HTTPS, "", 443));
}

TEST(address_wildcard_and_ipv6)
{
    CHECK(addr_is("*.example.com", CFG_SCHEME_HTTPS, "*.example.com", 443));
    CHECK(addr_is("[::1]:8080", CFG_SCHEME_HTTPS, "::1", 8080));
    CHECK(addr_is("[::1]", CFG_SCHEME_HTTPS, "::1", 443));
    CHECK(addr_is("http://[::1]:8080", CFG_SCHEME_HTTP, "::1", 8080));
}

TEST(address_defaults_follow_http_port_options)
{
    cfg_t *c = parse("{\n\thttp_port 8080\n\thttps_port 8443\n}\n"
                     "a.com, b.com:8080, http://c.com, :9000 {\n\trespond hi\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->sites[0].n_addrs, 4);
    CHECK_INT(c->sites[0].addrs[0].port, 8443);
    CHECK_INT(c->sites[0].addrs[0].scheme, CFG_SCHEME_HTTPS);
    CHECK_INT(c->sites[0].addrs[1].port, 8080);
    CHECK_INT(c->sites[0].addrs[1].scheme, CFG_SCHEME_HTTP);
    CHECK_INT(c->sites[0].addrs[2].port, 8080);
    CHECK_INT(c->sites[0].addrs[2].scheme, CFG_SCHEME_HTTP);
    CHECK_INT(c->sites[0].addrs[3].port, 9000);
    CHECK_INT(c->sites[0].addrs[3].scheme, CFG_SCHEME_HTTP);
    CHECK_INT(c->n_listeners, 3);
    cfg_unref(c);
}

TEST(address_list_forms)
{
    cfg_t *c = parse("a.com b.com, c.com,\n\td.com {\n\trespond hi\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->sites[0].n_addrs, 4);
    CHECK_STR(c->sites[0].addrs[0].host, "a.com");
    CHECK_STR(c->sites[0].addrs[1].host, "b.com");
    CHECK_STR(c->sites[0].addrs[2].host, "c.com");
    CHECK_STR(c->sites[0].addrs[3].host, "d.com");
    CHECK_INT(c->sites[0].addrs[3].line, 2);
    CHECK_INT(served(c), 1);
    CHECK_INT(c->listeners[0].n_sites, 1);
    cfg_unref(c);
}

TEST(address_duplicate_in_one_site_is_merged)
{
    cfg_t *c = parse("a.com, a.com:443 {\n\trespond hi\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->sites[0].n_addrs, 1);
        cfg_unref(c);
    }
}

TEST(address_errors)
{
    CHECK_ERR("a.com,b.com {\n\trespond hi\n}\n",
              "t.conf:1: site addresses cannot contain a comma: \"a.com,b.com\": put a space "
              "after the comma");
    CHECK_ERR("a.com, {\n\trespond hi\n}\n",
              "t.conf:1: expected another address but found '{': check for an extra comma");
    /* found by fuzz_config: a lone comma, then an import that brings nothing */
    CHECK_ERR("\n,\nimport nothing-matches-this*\n",
              "t.conf:2: expected another address after ','");
    CHECK_ERR("a.com{\n\trespond hi\n}\n",
              "t.conf:1: site address \"a.com{\" ends with '{': put a space before the brace");
    CHECK_ERR("ftp://a.com {\n}\n",
              "t.conf:1: ftp://a.com: unsupported scheme \"ftp\" (expected http or https)");
    CHECK_ERR("h2c://a.com {\n}\n",
              "t.conf:1: h2c://a.com: unsupported scheme \"h2c\" (expected http or https)");
    CHECK_ERR("a.com/api {\n}\n",
              "t.conf:1: a.com/api: site addresses with a path are not supported by psproxy");
    CHECK_ERR("a.com:http {\n}\n", "t.conf:1: a.com:http: invalid port \"http\"");
    CHECK_ERR("a.com:65536 {\n}\n", "t.conf:1: a.com:65536: invalid port \"65536\"");
    CHECK_ERR("https://a.com:80 {\n}\n",
              "t.conf:1: https://a.com:80: scheme and port violate convention (https on the "
              "HTTP port)");
    CHECK_ERR("http://a.com:443 {\n}\n",
              "t.conf:1: http://a.com:443: scheme and port violate convention (http on the "
              "HTTPS port)");
    CHECK_ERR("{host}.com {\n}\n",
              "t.conf:1: {host}.com: placeholders in site addresses are not supported by psproxy");
}

TEST(single_site_without_braces)
{
    cfg_t *c = parse("example.com\n\nreverse_proxy localhost:8080\nlog\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->n_sites, 1);
    CHECK_STR(c->sites[0].addrs[0].host, "example.com");
    CHECK_INT(c->sites[0].n_handlers, 1);
    CHECK_INT(c->sites[0].handlers[0].kind, CFG_H_PROXY);
    CHECK_INT(c->sites[0].log.enabled, 1);
    cfg_unref(c);
}

TEST(site_with_only_an_address)
{
    cfg_t *c = parse("example.com\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->n_sites, 1);
        CHECK_INT(c->sites[0].n_handlers, 0);
        cfg_unref(c);
    }
}

TEST(brace_on_next_line)
{
    cfg_t *c = parse("example.com\n{\n\trespond hi\n}\n:8080 {\n\trespond ho\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->n_sites, 2);
        cfg_unref(c);
    }
}

TEST(braceless_site_then_another_site_is_an_error)
{
    CHECK_ERR("a.com\nrespond hi\nb.com {\n\trespond ho\n}\n",
              "t.conf:3: b.com: not supported by psproxy (if this is a site, every site needs "
              "braces when there are several)");
}

TEST(empty_file_has_no_sites)
{
    cfg_t *c = parse("# nothing here\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->n_sites, 0);
        CHECK_INT(c->n_listeners, 0);
        cfg_unref(c);
    }
}

/* ---- listeners ---- */

TEST(listeners_one_per_port)
{
    cfg_t *c = parse("a.com, http://a.com {\n\trespond a\n}\n"
                     "b.com {\n\trespond b\n}\n"
                     ":8080 {\n\trespond c\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->n_listeners, 3);
    CHECK_INT(c->listeners[0].port, 443);
    CHECK_INT(c->listeners[0].scheme, CFG_SCHEME_HTTPS);
    CHECK_INT(c->listeners[0].n_sites, 2);
    CHECK_INT(c->listeners[1].port, 80);
    CHECK_INT(c->listeners[1].scheme, CFG_SCHEME_HTTP);
    CHECK_INT(c->listeners[1].n_sites, 1);
    CHECK(c->listeners[1].sites[0] == &c->sites[0]);
    CHECK_INT(c->listeners[2].port, 8080);
    cfg_unref(c);
}

TEST(listener_sites_most_specific_first)
{
    cfg_t *c = parse(":443 {\n\trespond any\n}\n"
                     "*.example.com {\n\trespond wild\n}\n"
                     "a.com {\n\trespond short\n}\n"
                     "www.example.com {\n\trespond long\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(served(c), 1);
    CHECK_INT(c->listeners[0].n_sites, 4);
    CHECK_STR(c->listeners[0].sites[0]->addrs[0].host, "www.example.com");
    CHECK_STR(c->listeners[0].sites[1]->addrs[0].host, "a.com");
    CHECK_STR(c->listeners[0].sites[2]->addrs[0].host, "*.example.com");
    CHECK_STR(c->listeners[0].sites[3]->addrs[0].host, "");
    cfg_unref(c);
}

TEST(listener_cannot_mix_schemes)
{
    CHECK_ERR("http://a.com:8080 {\n\trespond a\n}\nhttps://b.com:8080 {\n\trespond b\n}\n",
              "t.conf:4: port 8080 serves http (t.conf:1) and https here: one port cannot mix "
              "http and https");
}

TEST(same_host_twice_on_a_port_is_ambiguous)
{
    CHECK_ERR("a.com {\n\trespond a\n}\nA.com:443 {\n\trespond b\n}\n",
              "t.conf:4: ambiguous site definition: a.com:443 is also defined at t.conf:1");
    CHECK_ERR(":8080 {\n\trespond a\n}\n:8080 {\n\trespond b\n}\n",
              "t.conf:4: ambiguous site definition: (any host):8080 is also defined at t.conf:1");
}

/* ---- certificates ---- */

/* Whether TEXT parses and cfg_check_certs refuses it with exactly WANT
 * (NULL: accepts it). */
static int certs_check_is(const char *text, const char *want)
{
    cfg_t *c = parse(text);
    if (c == NULL)
        return 0;
    char err[1024] = "";
    int rc = cfg_check_certs(c, err, sizeof(err));
    cfg_unref(c);
    if (want == NULL && rc != 0)
        fprintf(stderr, "  refused: %s\n", err);
    else if (want != NULL && (rc != PS_ECONFIG || strcmp(err, want) != 0))
        fprintf(stderr, "  error \"%s\"\n  expected \"%s\"\n", err, want);
    return want == NULL ? rc == 0 : rc == PS_ECONFIG && strcmp(err, want) == 0;
}

#define LOCAL_CA                                                                                   \
    " (Caddy would use its local CA, which psproxy does not have yet): give the site tls "      \
    "CERT_FILE KEY_FILE, or serve it as http://"

/* Caddy 2.6.2 issues these from its local CA (caddy adapt: an "internal"
 * issuer policy), never from an ACME CA, acme_ca or not */
TEST(certs_refuses_names_caddy_gives_its_local_ca)
{
    CHECK(certs_check_is("localhost {\n\trespond hi\n}\n",
                         "t.conf:1: localhost: no ACME CA issues certificates for localhost "
                         "names" LOCAL_CA "localhost"));
    CHECK(certs_check_is("a.com {\n\trespond a\n}\n\nb.com,\n*.localhost {\n\trespond b\n}\n",
                         "t.conf:6: *.localhost: no ACME CA issues certificates for localhost "
                         "names" LOCAL_CA "*.localhost"));
    CHECK(certs_check_is("app.localhost:8443 {\n\trespond hi\n}\n",
                         "t.conf:1: app.localhost: no ACME CA issues certificates for localhost "
                         "names" LOCAL_CA "app.localhost"));
    CHECK(certs_check_is("printer.local {\n\trespond hi\n}\n",
                         "t.conf:1: printer.local: no ACME CA issues certificates for .local "
                         "names (multicast DNS)" LOCAL_CA "printer.local"));
    CHECK(certs_check_is("{\n\tacme_ca https://ca.example/dir\n}\n127.0.0.1 {\n\trespond hi\n}\n",
                         "t.conf:4: 127.0.0.1: no ACME certificate for an IP address" LOCAL_CA
                         "127.0.0.1"));
    CHECK(certs_check_is("[::1]:8443 {\n\trespond hi\n}\n",
                         "t.conf:1: ::1: no ACME certificate for an IP address" LOCAL_CA "[::1]"));
    CHECK(certs_check_is("8.8.8.8 {\n\tlog\n}\n",
                         "t.conf:1: 8.8.8.8: no ACME certificate for an IP address" LOCAL_CA
                         "8.8.8.8"));
}

/* Caddy 2.6.2 orders these from the ACME CA, where no public CA issues */
TEST(certs_refuses_private_names_without_acme_ca)
{
    CHECK(certs_check_is("db.internal {\n\trespond hi\n}\n",
                         "t.conf:1: db.internal: no public CA issues certificates for "
                         "private-use names (.internal, .home.arpa): give the site tls "
                         "CERT_FILE KEY_FILE, set acme_ca to a private CA that issues for it, "
                         "or serve it as http://db.internal"));
    CHECK(certs_check_is("nas.home.arpa {\n\trespond hi\n}\n",
                         "t.conf:1: nas.home.arpa: no public CA issues certificates for "
                         "private-use names (.internal, .home.arpa): give the site tls "
                         "CERT_FILE KEY_FILE, set acme_ca to a private CA that issues for it, "
                         "or serve it as http://nas.home.arpa"));
    CHECK(certs_check_is("myhost {\n\trespond hi\n}\n",
                         "t.conf:1: myhost: no public CA issues certificates for single-label "
                         "names: give the site tls CERT_FILE KEY_FILE, set acme_ca to a private "
                         "CA that issues for it, or serve it as http://myhost"));
    /* a private CA may issue them */
    CHECK(certs_check_is("{\n\tacme_ca https://ca.corp/dir\n}\ndb.internal myhost {\n\tlog\n}\n",
                         NULL));
}

TEST(certs_accepts_internal_names_with_own_certificate_or_over_http)
{
    CHECK(certs_check_is("localhost, 127.0.0.1, *.localhost, a.local {\n\ttls c.pem k.pem\n}\n",
                         NULL));
    CHECK(certs_check_is("http://localhost, http://127.0.0.1:8080, localhost:80 {\n\tlog\n}\n",
                         NULL));
    CHECK(certs_check_is("{\n\tauto_https disable_redirects\n}\nexample.com, x.test, "
                         "localhost.example.com, local.example.com {\n\tlog\n}\n",
                         NULL));
}

TEST(certs_refuses_what_acme_cannot_serve)
{
    CHECK(certs_check_is("*.wild.test {\n\tlog\n}\n",
                         "t.conf:1: *.wild.test: wildcard names need the DNS-01 challenge, which "
                         "psproxy does not support: give the site tls CERT_FILE KEY_FILE"));
    CHECK(certs_check_is(":443 {\n\tlog\n}\n",
                         "t.conf:1: : a site for any host name cannot get an ACME certificate: "
                         "give it tls CERT_FILE KEY_FILE"));
    CHECK(certs_check_is("a.test {\n\ttls internal\n}\n",
                         "t.conf:1: a.test: tls internal is not supported by psproxy yet: use tls "
                         "CERT_FILE KEY_FILE or leave tls out for an ACME certificate"));
}

/* ---- lexer ---- */

TEST(lexer_quotes_and_escapes)
{
    cfg_t *c = parse(":80 {\n"
                     "\theader X-A \"a \\\"quoted\\\" \\n value\"\n"
                     "\theader X-B `raw \"text\" \\n`\n"
                     "\theader X-C plain\\x\n"
                     "\theader X-D \"\"\n"
                     "}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_site_t *s = &c->sites[0];
    CHECK_INT(s->n_handlers, 4);
    CHECK_STR(tmpl_str(&s->handlers[0].u.header.ops[0].value), "a \"quoted\" \\n value");
    CHECK_STR(tmpl_str(&s->handlers[1].u.header.ops[0].value), "raw \"text\" \\n");
    CHECK_STR(tmpl_str(&s->handlers[2].u.header.ops[0].value), "plain\\x");
    CHECK_INT(s->handlers[3].u.header.ops[0].value.n_parts, 0);
    cfg_unref(c);
}

TEST(lexer_comments_only_at_token_start)
{
    cfg_t *c = parse("# leading comment\n:80 { # trailing comment\n"
                     "\trespond a#b 200 # the rest is a comment\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(tmpl_str(&c->sites[0].handlers[0].u.respond.body), "a#b");
        CHECK_INT(c->sites[0].handlers[0].u.respond.status, 200);
        cfg_unref(c);
    }
}

TEST(lexer_line_continuation)
{
    /* the continued line keeps its first line number; later lines count on */
    CHECK_ERR(":80 {\n\treverse_proxy localhost:1 \\\n\t\tlocalhost:2\n\tencode gzip\n}\n",
              "t.conf:4: encode: not supported by psproxy");
    cfg_t *c = parse(":80 {\n\treverse_proxy localhost:1 \\\n\t\tlocalhost:2\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->sites[0].handlers[0].u.proxy.n_ups, 2);
        CHECK_INT(c->sites[0].handlers[0].u.proxy.ups[1].line, 2);
        cfg_unref(c);
    }
}

TEST(lexer_multiline_quoted_token_counts_lines)
{
    CHECK_ERR(":80 {\n\trespond \"a\nb\nc\" 200\n\tfile_server\n}\n",
              "t.conf:5: file_server: not supported by psproxy");
}

TEST(lexer_crlf_line_endings)
{
    cfg_t *c = parse(":80 {\r\n\trespond hi 201\r\n}\r\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->sites[0].handlers[0].u.respond.status, 201);
        cfg_unref(c);
    }
}

TEST(lexer_unterminated_quote)
{
    CHECK_ERR(":80 {\n\trespond \"hi\n}\n", "t.conf:2: unterminated quoted string");
    CHECK_ERR(":80 {\n\trespond `hi\n}\n", "t.conf:2: unterminated backtick string");
}

TEST(lexer_rejects_nul_byte)
{
    cfg_t *c = NULL;
    static const char text[] = ":80 {\n\trespond a\0b\n}\n";
    CHECK(cfg_parse("t.conf", text, sizeof(text) - 1, &c, last_err, sizeof(last_err)) ==
          PS_ECONFIG);
    CHECK_STR(last_err, "t.conf:2: unexpected NUL byte");
}

/* ---- blocks ---- */

TEST(block_errors)
{
    CHECK_ERR(":80 {\n\trespond hi\n}\n}\n", "t.conf:4: unexpected '}'");
    CHECK_ERR("}\n", "t.conf:1: unexpected '}'");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tto b:2\n\n",
              "t.conf:3: unterminated block (opened at line 2)");
    CHECK_ERR(":80 {\n\trespond hi\n", "t.conf:2: unterminated block (opened at line 1)");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 { to b:2\n\t}\n}\n",
              "t.conf:2: unexpected \"to\" after '{': a block starts on a new line");
    CHECK_ERR(":80 {\n\t{\n\t}\n}\n", "t.conf:2: unexpected '{': a block must follow a directive");
    CHECK_ERR(":80 {\n\trespond hi {\n\t\tclose\n\t} 200\n}\n",
              "t.conf:4: unexpected \"200\" after '}'");
}

TEST(closing_brace_may_end_a_line)
{
    cfg_t *c = parse(":80 {\n\trespond hi {\n\t\tclose }\n\trespond /x ho }\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->sites[0].n_handlers, 2);
        cfg_unref(c);
    }
}

TEST(quoted_braces_are_text)
{
    cfg_t *c = parse(":80 {\n\trespond \"{\" 200\n\trespond /x \"}\"\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(tmpl_str(&c->sites[0].handlers[1].u.respond.body), "{");
        cfg_unref(c);
    }
}

/* ---- environment ---- */

TEST(env_substitution)
{
    setenv("PSPROXY_T_HOST", "api.example.com", 1);
    setenv("PSPROXY_T_UP", "localhost:9000", 1);
    cfg_t *c = parse("{$PSPROXY_T_HOST} {\n\treverse_proxy {$PSPROXY_T_UP}\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->sites[0].addrs[0].host, "api.example.com");
        CHECK_STR(c->sites[0].handlers[0].u.proxy.ups[0].hostport, "localhost:9000");
        cfg_unref(c);
    }
}

TEST(env_default_value)
{
    unsetenv("PSPROXY_T_UNSET");
    cfg_t *c = parse(":80 {\n\treverse_proxy {$PSPROXY_T_UNSET:localhost:7000}\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->sites[0].handlers[0].u.proxy.ups[0].hostport, "localhost:7000");
        cfg_unref(c);
    }
    setenv("PSPROXY_T_EMPTY", "", 1);
    c = parse(":80 {\n\trespond \"[{$PSPROXY_T_EMPTY:dflt}]\"\n}\n");
    CHECK(c != NULL);
    if (c) { /* set but empty is not unset: no default */
        CHECK_STR(tmpl_str(&c->sites[0].handlers[0].u.respond.body), "[]");
        cfg_unref(c);
    }
}

TEST(env_unset_without_default_is_empty)
{
    unsetenv("PSPROXY_T_UNSET");
    cfg_t *c = parse(":80 {\n\trespond \"a{$PSPROXY_T_UNSET}b\"\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(tmpl_str(&c->sites[0].handlers[0].u.respond.body), "ab");
        cfg_unref(c);
    }
}

TEST(env_value_is_substituted_before_lexing)
{
    /* Caddy 2.6 splices the raw value into the text: spaces split tokens,
     * quotes quote, even inside backticks */
    setenv("PSPROXY_T_TWO", "localhost:1 localhost:2", 1);
    setenv("PSPROXY_T_Q", "\"a b\"", 1);
    cfg_t *c = parse(":80 {\n\treverse_proxy {$PSPROXY_T_TWO}\n\trespond {$PSPROXY_T_Q} 200\n"
                     "\theader X `{$PSPROXY_T_Q}`\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_site_t *s = &c->sites[0];
    CHECK_INT(s->handlers[2].u.proxy.n_ups, 2);
    CHECK_STR(tmpl_str(&s->handlers[1].u.respond.body), "a b");
    CHECK_STR(tmpl_str(&s->handlers[0].u.header.ops[0].value), "\"a b\"");
    cfg_unref(c);
}

TEST(env_empty_name_stays)
{
    cfg_t *c = parse(":80 {\n\trespond \"{$}\"\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(tmpl_str(&c->sites[0].handlers[0].u.respond.body), "{$}");
        cfg_unref(c);
    }
}

/* ---- imports ---- */

TEST(import_files_globs_snippets_and_args)
{
    cfg_t *c = NULL;
    CHECK(cfg_load("config/main.conf", &c, last_err, sizeof(last_err)) == 0);
    if (!c) {
        fprintf(stderr, "  %s\n", last_err);
        return;
    }
    CHECK_INT(c->http_port, 8080);
    CHECK_INT(c->n_sites, 1);
    const cfg_site_t *s = &c->sites[0];
    CHECK_INT(s->n_handlers, 4);
    CHECK_INT(s->handlers[0].kind, CFG_H_HEADER);
    CHECK_STR(tmpl_str(&s->handlers[0].u.header.ops[0].value), "https://app.example.com");
    CHECK_STR(s->handlers[0].file, "config/main.conf");
    CHECK_INT(s->handlers[0].line, 8);
    CHECK_INT(s->handlers[1].kind, CFG_H_REDIR);
    CHECK_STR(s->handlers[1].file, "config/sites/b.conf");
    CHECK_INT(s->handlers[1].line, 1);
    CHECK_INT(s->handlers[2].kind, CFG_H_RESPOND);
    CHECK_STR(s->handlers[2].file, "config/sites/a.conf");
    CHECK_INT(s->handlers[3].kind, CFG_H_PROXY);
    CHECK_STR(s->handlers[3].file, "config/snippets.conf");
    CHECK_INT(s->handlers[3].line, 3);
    CHECK_INT(s->log.enabled, 1);
    cfg_unref(c);
}

/* issue #19: which `header` directives Caddy defers (caddy adapt says
 * "deferred": true, or a "require" for ?): deletions, defaults, `defer`
 * and '>' (Caddy 2.7's deferred set); plain sets and adds run before the
 * handler. */
TEST(header_directives_are_deferred_as_caddy_defers_them)
{
    cfg_t *c = parse(":80 {\n"
                     "\theader X-Set v\n"
                     "\theader +X-Add v\n"
                     "\theader -X-Del\n"
                     "\theader ?X-Def v\n"
                     "\theader >X-Gt v\n"
                     "\theader {\n\t\tX-B v\n\t\tdefer\n\t}\n"
                     "\theader {\n\t\tX-C v\n\t\t-X-D\n\t}\n"
                     "\theader {\n\t\tX-E v\n\t\t+X-F w\n\t}\n"
                     "\trespond ok\n}\n");
    CHECK(c != NULL);
    if (c == NULL)
        return;
    static const int want[] = {0, 0, 1, 1, 1, 1, 1, 0};
    const cfg_site_t *s = &c->sites[0];
    size_t k = 0;
    for (size_t i = 0; i < s->n_handlers && k < 8; i++)
        if (s->handlers[i].kind == CFG_H_HEADER) {
            if (s->handlers[i].u.header.deferred != want[k])
                fprintf(stderr, "  header on line %d: deferred %d\n", s->handlers[i].line,
                        s->handlers[i].u.header.deferred);
            CHECK_INT(s->handlers[i].u.header.deferred, want[k]);
            k++;
        }
    CHECK_INT(k, 8);
    cfg_unref(c);
}

TEST(import_glob_without_match_is_empty)
{
    cfg_t *c = NULL;
    const char *text = ":80 {\n\timport nothing/*.conf\n\trespond hi\n}\n";
    CHECK(cfg_parse("config/x.conf", text, strlen(text), &c, last_err, sizeof(last_err)) == 0);
    cfg_unref(c);
}

TEST(import_snippet_in_memory)
{
    cfg_t *c = parse("(proxy) {\n\treverse_proxy {args.0} {\n\t\tlb_policy {args.1}\n\t}\n}\n"
                     "a.com {\n\timport proxy localhost:1 first\n}\n"
                     "b.com {\n\timport proxy localhost:2 round_robin\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->n_sites, 2);
    CHECK_STR(c->sites[0].handlers[0].u.proxy.ups[0].hostport, "localhost:1");
    CHECK_INT(c->sites[0].handlers[0].u.proxy.lb_policy, CFG_LB_FIRST);
    CHECK_STR(c->sites[1].handlers[0].u.proxy.ups[0].hostport, "localhost:2");
    CHECK_INT(c->sites[1].handlers[0].u.proxy.lb_policy, CFG_LB_ROUND_ROBIN);
    CHECK_INT(c->sites[1].handlers[0].line, 2);
    cfg_unref(c);
}

TEST(import_snippet_of_whole_sites)
{
    cfg_t *c = parse("(sites) {\n\ta.com {\n\t\trespond a\n\t}\n}\nimport sites\n"
                     ":8080 {\n\trespond b\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->n_sites, 2);
        cfg_unref(c);
    }
}

TEST(import_inside_nested_block)
{
    cfg_t *c = parse("(tr) {\n\ttransport http {\n\t\tdial_timeout 7s\n\t}\n}\n"
                     ":80 {\n\treverse_proxy a:1 {\n\t\timport tr\n\t\tlb_policy first\n\t}\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->sites[0].handlers[0].u.proxy.dial_timeout, 7000);
        CHECK_INT(c->sites[0].handlers[0].u.proxy.lb_policy, CFG_LB_FIRST);
        cfg_unref(c);
    }
}

TEST(import_errors)
{
    CHECK_ERR(":80 {\n\timport\n}\n", "t.conf:2: import: expected a file or snippet name");
    CHECK_ERR(":80 {\n\timport \"\"\n}\n", "t.conf:2: import: expected a non-empty file name");
    CHECK_ERR(":80 {\n\timport missing\n}\n", "t.conf:2: import: file not found: missing");
    CHECK_ERR("(s) {\n\trespond a\n}\n(s) {\n\trespond b\n}\n",
              "t.conf:4: snippet s: already defined at t.conf:1");
    CHECK_ERR("(s)\n", "t.conf:1: snippet s: expected '{'");
    CHECK_ERR("(s)\nrespond hi\n", "t.conf:1: snippet s: expected '{'");
}

TEST(import_snippet_cycle)
{
    CHECK_ERR("(a) {\n\timport b\n}\n(b) {\n\timport a\n}\n:80 {\n\timport a\n}\n",
              "t.conf:5: import: cycle: a is imported by b <- a");
    CHECK_ERR("(a) {\n\timport a\n}\n:80 {\n\timport a\n}\n",
              "t.conf:2: import: cycle: a is imported by a");
}

TEST(import_file_cycle)
{
    CHECK(load_fails_with("config/cycle_a.conf",
                          "config/cycle_b.conf:1: import: cycle: config/cycle_a.conf is imported "
                          "by config/cycle_b.conf <- config/cycle_a.conf"));
    CHECK(load_fails_with("config/self.conf", "config/self.conf:1: import: cycle: "
                                              "config/self.conf is imported by config/self.conf"));
}

TEST(import_errors_name_the_imported_file)
{
    CHECK(load_fails_with("config/bad_import.conf",
                          "config/broken.conf:2: encode: not supported by psproxy"));
    CHECK(load_fails_with("config/missing_import.conf",
                          "config/missing_import.conf:2: import: file not found: nowhere.conf"));
}

TEST(load_missing_file)
{
    cfg_t *c = NULL;
    CHECK(cfg_load("config/does-not-exist.conf", &c, last_err, sizeof(last_err)) == PS_ECONFIG);
    CHECK(c == NULL);
    CHECK_STR(last_err, "config/does-not-exist.conf: cannot read: No such file or directory");
}

/* ---- directives ---- */

TEST(unsupported_directives_are_errors)
{
    static const char *const dirs[] = {"encode gzip",
                                       "file_server",
                                       "handle /x",
                                       "route",
                                       "php_fastcgi localhost:9000",
                                       "rewrite /a /b",
                                       "basicauth",
                                       "root * /srv",
                                       "try_files {path}"};
    for (size_t i = 0; i < PS_ARRAY_SIZE(dirs); i++) {
        char text[128], want[128];
        snprintf(text, sizeof(text), "photospots.conf\n\n%s\n", dirs[i]);
        char name[32];
        sscanf(dirs[i], "%31s", name);
        snprintf(want, sizeof(want), "t.conf:3: %s: not supported by psproxy", name);
        CHECK_ERR(text, want);
    }
}

TEST(named_matchers_are_errors)
{
    CHECK_ERR(":80 {\n\t@api path /api/*\n}\n",
              "t.conf:2: @api: named matchers are not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy @api localhost:1\n}\n",
              "t.conf:2: reverse_proxy: named matchers are not supported by psproxy");
    CHECK_ERR(":80 {\n\theader @m X a\n}\n",
              "t.conf:2: header: named matchers are not supported by psproxy");
}

TEST(reverse_proxy_defaults)
{
    cfg_t *c = parse(":80 {\n\treverse_proxy localhost:8080\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = &c->sites[0].handlers[0];
    CHECK(h->match == NULL);
    CHECK_STR(h->file, "t.conf");
    CHECK_INT(h->line, 2);
    const cfg_proxy_t *px = &h->u.proxy;
    CHECK_INT(px->n_ups, 1);
    CHECK_STR(px->ups[0].host, "localhost");
    CHECK_STR(px->ups[0].port, "8080");
    CHECK_STR(px->ups[0].hostport, "localhost:8080");
    CHECK_INT(px->lb_policy, CFG_LB_ROUND_ROBIN); /* issue #6: not Caddy's random */
    CHECK_INT(px->fail_duration, 10000);
    CHECK_INT(px->max_fails, 1);
    CHECK(px->health_uri == NULL);
    CHECK_INT(px->lb_try_duration, 0);
    CHECK_INT(px->lb_try_interval, 250);
    CHECK_INT(px->dial_timeout, 3000);
    /* issue #19: none, as Caddy (long polls, server-sent events) */
    CHECK_INT(px->response_header_timeout, 0);
    CHECK_INT(px->read_timeout, 0);
    CHECK_INT(px->write_timeout, 0);
    CHECK_INT(px->keepalive, 120000);
    /* issue #23: no cap unless written; the pool is sized by demand */
    CHECK_INT(px->keepalive_idle_conns, 0);
    CHECK_INT(px->keepalive_idle_conns_per_host, 0);
    CHECK_INT(px->keepalive_off, 0);
    cfg_unref(c);
}

TEST(reverse_proxy_upstream_forms)
{
    cfg_t *c = parse(":80 {\n\treverse_proxy 127.0.0.1:8080 [::1]:8081 :8082 http://h:81 "
                     "http://h2 backend http://[::1]\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_proxy_t *px = &c->sites[0].handlers[0].u.proxy;
    CHECK_INT(px->n_ups, 7);
    CHECK_STR(px->ups[0].hostport, "127.0.0.1:8080");
    CHECK_STR(px->ups[1].host, "::1");
    CHECK_STR(px->ups[1].hostport, "[::1]:8081");
    CHECK_STR(px->ups[2].host, "127.0.0.1"); /* Go dials ":8082" on the local system */
    CHECK_STR(px->ups[2].hostport, "127.0.0.1:8082");
    CHECK_STR(px->ups[3].hostport, "h:81");
    CHECK_STR(px->ups[4].hostport, "h2:80");
    CHECK_STR(px->ups[5].hostport, "backend:80");
    CHECK_STR(px->ups[6].hostport, "[::1]:80");
    cfg_unref(c);
}

TEST(reverse_proxy_upstream_errors)
{
    CHECK_ERR(":80 {\n\treverse_proxy\n}\n",
              "t.conf:2: reverse_proxy: expected at least one upstream");
    CHECK_ERR(":80 {\n\treverse_proxy /api/*\n}\n",
              "t.conf:2: reverse_proxy: expected at least one upstream");
    CHECK_ERR(":80 {\n\treverse_proxy {\n\t\tlb_policy first\n\t}\n}\n",
              "t.conf:2: reverse_proxy: expected at least one upstream");
    CHECK_ERR(
        ":80 {\n\treverse_proxy https://h:8443\n}\n",
        "t.conf:2: reverse_proxy: https://h:8443: TLS to upstreams is not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy h2c://h:1\n}\n",
              "t.conf:2: reverse_proxy: h2c://h:1: scheme \"h2c\" is not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy unix//run/app.sock\n}\n",
              "t.conf:2: reverse_proxy: unix//run/app.sock: network addresses (unix sockets) are "
              "not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy http://h:1/path\n}\n",
              "t.conf:2: reverse_proxy: http://h:1/path: upstream URLs may only have scheme, host "
              "and port");
    CHECK_ERR(":80 {\n\treverse_proxy http://h:443\n}\n",
              "t.conf:2: reverse_proxy: http://h:443: http:// on port 443 (the HTTPS port)");
    CHECK_ERR(":80 {\n\treverse_proxy h:1-3\n}\n",
              "t.conf:2: reverse_proxy: h:1-3: invalid port \"1-3\"");
    CHECK_ERR(":80 {\n\treverse_proxy h:0\n}\n",
              "t.conf:2: reverse_proxy: h:0: invalid port \"0\"");
    CHECK_ERR(":80 {\n\treverse_proxy ::1:80\n}\n",
              "t.conf:2: reverse_proxy: ::1:80: an IPv6 upstream needs brackets: [::1:80]:PORT");
    CHECK_ERR(":80 {\n\treverse_proxy {host}:80\n}\n",
              "t.conf:2: reverse_proxy: placeholders in upstreams are not supported by psproxy");
}

TEST(reverse_proxy_block)
{
    cfg_t *c = parse(":80 {\n"
                     "\treverse_proxy /api/* localhost:1 {\n"
                     "\t\tto localhost:2 localhost:3\n"
                     "\t\tto localhost:4\n"
                     "\t\tlb_policy least_conn\n"
                     "\t\tlb_try_duration 5s\n"
                     "\t\tlb_try_interval 100ms\n"
                     "\t\theader_up Host {upstream_hostport}\n"
                     "\t\theader_up +X-Via psproxy\n"
                     "\t\theader_up -Cookie\n"
                     "\t\theader_up ?X-Real-IP {remote_host}\n"
                     "\t\theader_down -Server\n"
                     "\t\tflush_interval -1\n"
                     "\t\ttransport http {\n"
                     "\t\t\tdial_timeout 2s\n"
                     "\t\t\tresponse_header_timeout 30s\n"
                     "\t\t\tread_timeout 1m\n"
                     "\t\t\twrite_timeout 45s\n"
                     "\t\t\tkeepalive 90s\n"
                     "\t\t\tkeepalive_idle_conns 8\n"
                     "\t\t\tkeepalive_idle_conns_per_host 3\n"
                     "\t\t}\n"
                     "\t}\n"
                     "}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = &c->sites[0].handlers[0];
    CHECK_STR(h->match, "/api/*");
    const cfg_proxy_t *px = &h->u.proxy;
    CHECK_INT(px->n_ups, 4);
    CHECK_STR(px->ups[3].hostport, "localhost:4");
    CHECK_INT(px->ups[3].line, 4);
    CHECK_INT(px->lb_policy, CFG_LB_LEAST_CONN);
    CHECK_INT(px->lb_try_duration, 5000);
    CHECK_INT(px->lb_try_interval, 100);
    CHECK_INT(px->header_up.n, 4);
    CHECK_INT(px->header_up.ops[0].op, CFG_HDR_SET);
    CHECK_STR(px->header_up.ops[0].name, "Host");
    CHECK_INT(px->header_up.ops[0].value.n_parts, 1);
    CHECK_INT(px->header_up.ops[0].value.parts[0].var, CFG_VAR_UPSTREAM_HOSTPORT);
    CHECK_INT(px->header_up.ops[1].op, CFG_HDR_ADD);
    CHECK_STR(px->header_up.ops[1].name, "X-Via");
    CHECK_INT(px->header_up.ops[2].op, CFG_HDR_DEL);
    CHECK_STR(px->header_up.ops[2].name, "Cookie");
    CHECK_INT(px->header_up.ops[3].op, CFG_HDR_DEFAULT);
    CHECK_INT(px->header_down.n, 1);
    CHECK_INT(px->header_down.ops[0].op, CFG_HDR_DEL);
    CHECK_INT(px->dial_timeout, 2000);
    CHECK_INT(px->response_header_timeout, 30000);
    CHECK_INT(px->read_timeout, 60000);
    CHECK_INT(px->write_timeout, 45000);
    CHECK_INT(px->keepalive, 90000);
    CHECK_INT(px->keepalive_idle_conns, 8);
    CHECK_INT(px->keepalive_idle_conns_per_host, 3);
    cfg_unref(c);
}

TEST(reverse_proxy_keepalive_off)
{
    cfg_t *c = parse(":80 {\n\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\tkeepalive off\n"
                     "\t\t}\n\t\tflush_interval 100ms\n\t}\n}\n");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->sites[0].handlers[0].u.proxy.keepalive_off, 1);
        cfg_unref(c);
    }
}

TEST(reverse_proxy_sub_directive_errors)
{
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy cookie\n\t}\n}\n",
              "t.conf:3: lb_policy: cookie: not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy header X\n\t}\n}\n",
              "t.conf:3: lb_policy: unexpected argument \"X\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tlb_try_duration 5\n\t}\n}\n",
              "t.conf:3: lb_try_duration: expected a duration like 30s or 1m30s, got \"5\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tbuffer_requests\n\t}\n}\n",
              "t.conf:3: reverse_proxy: buffer_requests: not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\ttransport fastcgi\n\t}\n}\n",
              "t.conf:3: reverse_proxy: transport fastcgi: not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\ttls\n\t\t}\n\t}\n}\n",
              "t.conf:4: reverse_proxy: transport http: tls: not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\tkeepalive never\n"
              "\t\t}\n\t}\n}\n",
              "t.conf:4: keepalive: expected off or a duration, got \"never\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\tkeepalive_idle_conns x\n"
              "\t\t}\n\t}\n}\n",
              "t.conf:4: keepalive_idle_conns: expected a number, got \"x\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\ttransport http {\n"
              "\t\t\tkeepalive_idle_conns_per_host -1\n\t\t}\n\t}\n}\n",
              "t.conf:4: keepalive_idle_conns_per_host: expected a number, got \"-1\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tflush_interval soon\n\t}\n}\n",
              "t.conf:3: flush_interval: expected a duration or -1, got \"soon\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\theader_up X a b\n\t}\n}\n",
              "t.conf:3: header_up: find/replace (a third argument) is not supported by psproxy");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\theader_up\n\t}\n}\n",
              "t.conf:3: header_up: expected a header field name");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\theader_down -Server x\n\t}\n}\n",
              "t.conf:3: header_down: deleting Server takes no value");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\tto\n\t}\n}\n",
              "t.conf:3: reverse_proxy: to: expected an argument");
}

TEST(reverse_proxy_health_checks)
{
    cfg_t *c = parse(":80 {\n\treverse_proxy a:1 b:2 {\n\t\tlb_policy ip_hash\n"
                     "\t\tlb_retries 2\n\t\thealth_uri /actuator/health\n\t\thealth_port 81\n"
                     "\t\thealth_interval 2s\n\t\thealth_timeout 500ms\n\t\thealth_status 200\n"
                     "\t\thealth_body UP\n\t\thealth_passes 2\n\t\thealth_fails 3\n"
                     "\t\thealth_fail_closed\n\t\tfail_duration 30s\n\t\tmax_fails 4\n"
                     "\t\tunhealthy_status 5xx\n\t\tunhealthy_latency 1s\n\t}\n}\n");
    if (!c)
        return;
    const cfg_proxy_t *px = &c->sites[0].handlers[0].u.proxy;
    CHECK_INT(px->lb_policy, CFG_LB_IP_HASH);
    CHECK_INT(px->lb_retries, 2);
    CHECK_STR(px->health_uri, "/actuator/health");
    CHECK_INT(px->health_port, 81);
    CHECK_INT(px->health_interval, 2000);
    CHECK_INT(px->health_timeout, 500);
    CHECK_INT(px->health_status.code, 200);
    CHECK_INT(px->health_status.is_class, 0);
    CHECK_STR(px->health_body, "UP");
    CHECK_INT(px->health_passes, 2);
    CHECK_INT(px->health_fails, 3);
    CHECK_INT(px->health_fail_closed, 1);
    CHECK_INT(px->fail_duration, 30000);
    CHECK_INT(px->max_fails, 4);
    CHECK_INT(px->unhealthy_status.code, 5);
    CHECK_INT(px->unhealthy_status.is_class, 1);
    CHECK_INT(px->unhealthy_latency, 1000);
    cfg_unref(c);
}

TEST(reverse_proxy_health_errors)
{
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\thealth_status 2yy\n\t}\n}\n",
              "t.conf:3: health_status: expected a status like 200 or 2xx, got \"2yy\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\thealth_uri health\n\t}\n}\n",
              "t.conf:3: health_uri: expected a path starting with /, got \"health\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\thealth_fails 0\n\t}\n}\n",
              "t.conf:3: health_fails: expected a number of at least 1, got \"0\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\thealth_body \"(UP\"\n\t}\n}\n",
              "t.conf:3: health_body: not a valid regular expression: \"(UP\"");
    CHECK_ERR(":80 {\n\treverse_proxy a:1 {\n\t\thealth_headers\n\t}\n}\n",
              "t.conf:3: health_headers: not supported by psproxy yet");
}

TEST(header_forms)
{
    cfg_t *c = parse(":80 {\n"
                     "\theader X-Set v\n"
                     "\theader +X-Add v\n"
                     "\theader -X-Del\n"
                     "\theader ?X-Default v\n"
                     "\theader >X-Deferred v\n"
                     "\theader -X-Prefix-*\n"
                     "\theader X-Empty\n"
                     "}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_site_t *s = &c->sites[0];
    CHECK_INT(s->n_handlers, 7);
    CHECK_INT(s->handlers[0].u.header.ops[0].op, CFG_HDR_SET);
    CHECK_STR(s->handlers[0].u.header.ops[0].name, "X-Set");
    CHECK_INT(s->handlers[1].u.header.ops[0].op, CFG_HDR_ADD);
    CHECK_STR(s->handlers[1].u.header.ops[0].name, "X-Add");
    CHECK_INT(s->handlers[2].u.header.ops[0].op, CFG_HDR_DEL);
    CHECK_STR(s->handlers[2].u.header.ops[0].name, "X-Del");
    CHECK_INT(s->handlers[3].u.header.ops[0].op, CFG_HDR_DEFAULT);
    CHECK_INT(s->handlers[4].u.header.ops[0].op, CFG_HDR_SET);
    CHECK_STR(s->handlers[4].u.header.ops[0].name, "X-Deferred");
    CHECK_STR(s->handlers[5].u.header.ops[0].name, "X-Prefix-*");
    CHECK_INT(s->handlers[6].u.header.ops[0].value.n_parts, 0);
    cfg_unref(c);
}

TEST(header_block_form_and_defer)
{
    cfg_t *c = parse(":80 {\n\theader /api* {\n\t\tX-A 1\n\t\t-Server\n\t\tdefer\n"
                     "\t\t+Vary Origin\n\t}\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = &c->sites[0].handlers[0];
    CHECK_STR(h->match, "/api*");
    CHECK_INT(h->u.header.n, 3);
    CHECK_STR(h->u.header.ops[2].name, "Vary");
    cfg_unref(c);
}

TEST(header_errors)
{
    CHECK_ERR(":80 {\n\theader X a b\n}\n",
              "t.conf:2: header: find/replace (a third argument) is not supported by psproxy");
    CHECK_ERR(":80 {\n\theader\n}\n", "t.conf:2: header: expected a header field name");
    CHECK_ERR(":80 {\n\theader /x\n}\n", "t.conf:2: header: expected a header field name");
    CHECK_ERR(":80 {\n\theader {\n\t}\n}\n",
              "t.conf:2: header: expected at least one header field");
    CHECK_ERR(":80 {\n\theader X a {\n\t\tY b\n\t}\n}\n",
              "t.conf:2: header: expected either arguments or a block, not both");
    CHECK_ERR(":80 {\n\theader + v\n}\n",
              "t.conf:2: header: expected a header field name after \"+\"");
    CHECK_ERR(":80 {\n\theader X:Y v\n}\n", "t.conf:2: header: invalid header field name \"X:Y\"");
    CHECK_ERR(":80 {\n\theader -X v\n}\n", "t.conf:2: header: deleting X takes no value");
    CHECK_ERR(":80 {\n\theader -X*Y\n}\n",
              "t.conf:2: header: '*' may only end a field name to delete");
    CHECK_ERR(":80 {\n\theader {\n\t\tX a b\n\t}\n}\n",
              "t.conf:3: header: find/replace (a third argument) is not supported by psproxy");
}

TEST(respond_argument_rules)
{
    cfg_t *c = parse(":80 {\n"
                     "\trespond /a 404\n"
                     "\trespond /b \"404\"\n"
                     "\trespond /c 2000\n"
                     "\trespond /d \"gone\" 410\n"
                     "\trespond /e hello\n"
                     "\trespond * \"all\" 503\n"
                     "}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = c->sites[0].handlers;
    CHECK_INT(h[0].u.respond.status, 404); /* a lone 3-digit argument is a status */
    CHECK_INT(h[0].u.respond.body.n_parts, 0);
    CHECK_INT(h[1].u.respond.status, 404); /* quoting does not change that */
    CHECK_INT(h[2].u.respond.status, 200);
    CHECK_STR(tmpl_str(&h[2].u.respond.body), "2000");
    CHECK_INT(h[3].u.respond.status, 410);
    CHECK_STR(tmpl_str(&h[3].u.respond.body), "gone");
    CHECK_INT(h[4].u.respond.status, 200);
    CHECK_STR(tmpl_str(&h[4].u.respond.body), "hello");
    CHECK(h[5].match == NULL);
    CHECK_INT(h[5].u.respond.status, 503);
    cfg_unref(c);
}

TEST(respond_block)
{
    cfg_t *c =
        parse(":80 {\n\trespond 503 {\n\t\tbody \"down for maintenance\"\n\t\tclose\n\t}\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = &c->sites[0].handlers[0];
    CHECK_INT(h->u.respond.status, 503);
    CHECK_STR(tmpl_str(&h->u.respond.body), "down for maintenance");
    CHECK_INT(h->u.respond.close, 1);
    cfg_unref(c);
}

TEST(respond_errors)
{
    CHECK_ERR(":80 {\n\trespond\n}\n", "t.conf:2: respond: expected a body or a status code");
    CHECK_ERR(":80 {\n\trespond /x\n}\n",
              "t.conf:2: respond: expected a body or a status code (the first argument was taken "
              "as a path matcher)");
    CHECK_ERR(":80 {\n\trespond a b c\n}\n", "t.conf:2: respond: unexpected argument \"c\"");
    CHECK_ERR(":80 {\n\trespond a abc\n}\n",
              "t.conf:2: respond: expected a status code (100-999), got \"abc\"");
    CHECK_ERR(":80 {\n\trespond a 99\n}\n",
              "t.conf:2: respond: expected a status code (100-999), got \"99\"");
    CHECK_ERR(":80 {\n\trespond a 2xx\n}\n",
              "t.conf:2: respond: expected a status code (100-999), got \"2xx\"");
    CHECK_ERR(":80 {\n\trespond a {\n\t\tbody b\n\t}\n}\n", "t.conf:3: respond: body given twice");
    CHECK_ERR(":80 {\n\trespond 200 {\n\t\tclose now\n\t}\n}\n",
              "t.conf:3: respond: close: unexpected argument \"now\"");
    CHECK_ERR(":80 {\n\trespond 200 {\n\t\theader X\n\t}\n}\n",
              "t.conf:3: respond: header: not supported by psproxy");
}

TEST(redir_forms)
{
    cfg_t *c = parse(":80 {\n"
                     "\tredir https://example.com{uri}\n"
                     "\tredir /a /b permanent\n"
                     "\tredir /c /d temporary\n"
                     "\tredir /e /f 308\n"
                     "\tredir /g /h 401\n"
                     "}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = c->sites[0].handlers;
    /* sorted: the longer path first, the unmatched one last */
    CHECK_STR(h[0].match, "/a");
    CHECK_INT(h[0].u.redir.status, 301);
    CHECK_STR(h[1].match, "/c");
    CHECK_INT(h[1].u.redir.status, 302);
    CHECK_INT(h[2].u.redir.status, 308);
    CHECK_INT(h[3].u.redir.status, 401);
    CHECK(h[4].match == NULL);
    CHECK_INT(h[4].u.redir.status, 302);
    CHECK_STR(tmpl_str(&h[4].u.redir.to), "https://example.com<uri>");
    cfg_unref(c);
}

TEST(redir_errors)
{
    CHECK_ERR(":80 {\n\tredir\n}\n", "t.conf:2: redir: expected a target");
    CHECK_ERR(":80 {\n\tredir /new\n}\n",
              "t.conf:2: redir: expected a target (the first argument was taken as a path "
              "matcher)");
    CHECK_ERR(":80 {\n\tredir /a /b html\n}\n", "t.conf:2: redir: html: not supported by psproxy");
    CHECK_ERR(":80 {\n\tredir /a /b 200\n}\n",
              "t.conf:2: redir: expected permanent, temporary or a 3xx status code, got \"200\"");
    CHECK_ERR(":80 {\n\tredir a b c\n}\n", "t.conf:2: redir: unexpected argument \"c\"");
    CHECK_ERR(":80 {\n\tredir /a /b {\n\t}\n}\n", "t.conf:2: redir: unexpected block");
}

TEST(tls_forms)
{
    cfg_t *c = parse("a.com {\n\ttls internal\n}\nb.com {\n\ttls ops@b.com\n}\n"
                     "c.com {\n\ttls /etc/c.pem /etc/c.key\n}\nd.com {\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->sites[0].tls.internal, 1);
    CHECK_INT(c->sites[0].tls.line, 2);
    CHECK_STR(c->sites[1].tls.email, "ops@b.com");
    CHECK_STR(c->sites[2].tls.cert_file, "/etc/c.pem");
    CHECK_STR(c->sites[2].tls.key_file, "/etc/c.key");
    CHECK_INT(c->sites[3].tls.line, 0);
    cfg_unref(c);
}

TEST(tls_errors)
{
    CHECK_ERR("a.com {\n\ttls internal {\n\t\ton_demand\n\t}\n}\n",
              "t.conf:2: tls: sub-directives are not supported by psproxy");
    CHECK_ERR("a.com {\n\ttls\n}\n", "t.conf:2: tls: expected an argument");
    CHECK_ERR("a.com {\n\ttls a b c\n}\n", "t.conf:2: tls: unexpected argument \"c\"");
    CHECK_ERR("a.com {\n\ttls bogus\n}\n",
              "t.conf:2: tls: expected internal, an email address, or CERT KEY, got \"bogus\"");
    CHECK_ERR("a.com {\n\ttls internal\n\ttls internal\n}\n",
              "t.conf:3: tls: given twice in one site (first at line 2)");
}

TEST(log_forms)
{
    cfg_t *c = parse("a.com {\n\tlog\n}\nb.com {\n\tlog {\n\t\toutput file /var/log/b.log\n"
                     "\t\tformat json\n\t}\n}\nc.com {\n\tlog {\n\t\toutput stdout\n"
                     "\t\tformat console\n\t}\n}\nd.com {\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->sites[0].log.enabled, 1);
    CHECK(c->sites[0].log.file == NULL);
    CHECK_INT(c->sites[0].log.format, CFG_LOG_AUTO);
    CHECK_STR(c->sites[1].log.file, "/var/log/b.log");
    CHECK_INT(c->sites[1].log.format, CFG_LOG_JSON);
    CHECK_INT(c->sites[2].log.enabled, 1);
    CHECK(c->sites[2].log.file == NULL);
    CHECK_INT(c->sites[3].log.enabled, 0);
    cfg_unref(c);
}

TEST(log_errors)
{
    CHECK_ERR("a.com {\n\tlog {\n\t\tlevel DEBUG\n\t}\n}\n",
              "t.conf:3: log: level: not supported by psproxy");
    CHECK_ERR("a.com {\n\tlog {\n\t\toutput net localhost:1\n\t}\n}\n",
              "t.conf:3: log: output net: not supported by psproxy");
    CHECK_ERR("a.com {\n\tlog {\n\t\toutput file\n\t}\n}\n",
              "t.conf:3: log: output file: expected a path");
    CHECK_ERR("a.com {\n\tlog {\n\t\tformat filter\n\t}\n}\n",
              "t.conf:3: log: format filter: not supported by psproxy");
    CHECK_ERR("a.com {\n\tlog access\n}\n", "t.conf:2: log: unexpected argument \"access\"");
    CHECK_ERR("a.com {\n\tlog\n\tlog\n}\n", "t.conf:3: log: given twice in one site");
}

/* ---- placeholders ---- */

TEST(placeholders_short_and_long_forms)
{
    cfg_t *c = parse(":80 {\n\trespond \"{host}|{http.request.host}|{hostport}|{uri}|{path}|"
                     "{query}|{method}|{scheme}|{remote_host}|{remote_port}|"
                     "{http.request.uri.path}|{http.request.remote.port}\"\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_STR(tmpl_str(&c->sites[0].handlers[0].u.respond.body),
              "<host>|<host>|<hostport>|<uri>|<path>|<query>|<method>|<scheme>|<remote_host>|"
              "<remote_port>|<path>|<remote_port>");
    CHECK_STR(c->sites[0].handlers[0].u.respond.body.raw,
              "{host}|{http.request.host}|{hostport}|{uri}|{path}|{query}|{method}|{scheme}|"
              "{remote_host}|{remote_port}|{http.request.uri.path}|{http.request.remote.port}");
    cfg_unref(c);
}

TEST(placeholders_literal_braces)
{
    cfg_t *c = parse(":80 {\n\trespond `{\"ok\":true} \\{host} {} { x }`\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_tmpl_t *t = &c->sites[0].handlers[0].u.respond.body;
    CHECK_INT(t->n_parts, 1);
    CHECK_STR(tmpl_str(t), "{\"ok\":true} {host} {} { x }");
    cfg_unref(c);
}

TEST(placeholders_unknown_are_errors)
{
    CHECK_ERR(":80 {\n\trespond {foo}\n}\n", "t.conf:2: respond: unknown placeholder {foo}");
    CHECK_ERR(":80 {\n\theader X {http.request.header.Y}\n}\n",
              "t.conf:2: header: unknown placeholder {http.request.header.Y}");
    CHECK_ERR(":80 {\n\tredir /a https://x{env.HOME}\n}\n",
              "t.conf:2: redir: unknown placeholder {env.HOME}");
    CHECK_ERR("(s) {\n\trespond {args.1}\n}\n:80 {\n\timport s a\n}\n",
              "t.conf:2: respond: unknown placeholder {args.1}");
    CHECK_ERR(":80 {\n\trespond /{path} hi\n}\n",
              "t.conf:2: respond: placeholders in path matchers are not supported by psproxy");
}

/* ---- ordering ---- */

TEST(handler_order_follows_caddy)
{
    cfg_t *c = parse(":80 {\n"
                     "\treverse_proxy localhost:1\n"
                     "\trespond /r 404\n"
                     "\tredir /old /new\n"
                     "\theader X a\n"
                     "\theader /api/* Y b\n"
                     "\treverse_proxy /api/* localhost:2\n"
                     "\treverse_proxy /api/v1/* localhost:3\n"
                     "\theader /api/v1/* Z c\n"
                     "}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = c->sites[0].handlers;
    CHECK_INT(c->sites[0].n_handlers, 8);
    CHECK(h[0].kind == CFG_H_HEADER && h[0].line == 9);
    CHECK(h[1].kind == CFG_H_HEADER && h[1].line == 6);
    CHECK(h[2].kind == CFG_H_HEADER && h[2].line == 5);
    CHECK(h[3].kind == CFG_H_REDIR);
    CHECK(h[4].kind == CFG_H_RESPOND);
    CHECK(h[5].kind == CFG_H_PROXY && h[5].line == 8);
    CHECK(h[6].kind == CFG_H_PROXY && h[6].line == 7);
    CHECK(h[7].kind == CFG_H_PROXY && h[7].line == 2);
    cfg_unref(c);
}

TEST(handler_order_longer_path_first_stable)
{
    /* Caddy 2.6.2: longer first, equal lengths keep file order, so "/a*"
     * precedes "/a" (checked with caddy adapt) */
    cfg_t *c = parse(":80 {\n\trespond /a* 1\n\trespond /a 2\n\trespond /bb 3\n"
                     "\trespond /cc 4\n\trespond *.js 500\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    const cfg_handler_t *h = c->sites[0].handlers;
    CHECK_STR(h[0].match, "/a*");
    CHECK_STR(tmpl_str(&h[0].u.respond.body), "1"); /* not three digits: a body */
    CHECK_STR(h[1].match, "/bb");
    CHECK_STR(h[2].match, "/cc");
    CHECK_STR(h[3].match, "/a");
    /* "*.js" is not a matcher token in Caddy: it is the body */
    CHECK(h[4].match == NULL);
    CHECK_STR(tmpl_str(&h[4].u.respond.body), "*.js");
    cfg_unref(c);
}

/* ---- refcount ---- */

TEST(ref_and_unref)
{
    cfg_t *c = parse(":80 {\n\trespond hi\n}\n");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK(cfg_ref(c) == c);
    CHECK_INT(atomic_load(&c->refcnt), 2);
    cfg_unref(c);
    CHECK_INT(atomic_load(&c->refcnt), 1);
    cfg_unref(c);
    cfg_unref(NULL);
}

/* ---- matching ---- */

#define MP(pat, path) cfg_match_path((pat), (path), strlen(path))

TEST(match_path_exact_prefix_suffix_substring)
{
    CHECK(MP("/exact", "/exact"));
    CHECK(!MP("/exact", "/exact/more"));
    CHECK(MP("/api/*", "/api/v1/users"));
    CHECK(MP("/api/*", "/api/"));
    CHECK(!MP("/api/*", "/api"));
    CHECK(MP("/api*", "/api"));
    CHECK(MP("/api*", "/apiary"));
    CHECK(MP("*.js", "/static/app.js"));
    CHECK(!MP("*.js", "/static/app.json"));
    CHECK(MP("*/admin/*", "/x/admin/y"));
    CHECK(!MP("*/admin/*", "/x/admin"));
    CHECK(MP("*", "/anything"));
}

TEST(match_path_is_case_insensitive)
{
    CHECK(MP("/api/*", "/API/Users"));
    CHECK(MP("/exact", "/EXACT"));
    CHECK(MP("*.js", "/APP.JS"));
}

TEST(match_path_trims_trailing_dots_and_spaces)
{
    CHECK(MP("*.php", "/index.php."));
    CHECK(MP("/exact", "/exact. ."));
}

TEST(match_path_glob_star_stops_at_slash)
{
    CHECK(MP("/u/*/edit", "/u/42/edit"));
    CHECK(!MP("/u/*/edit", "/u/42/x/edit"));
    CHECK(MP("/f?o", "/foo"));
    CHECK(!MP("/f?o", "/f/o"));
    CHECK(MP("/v[0-9]/x", "/v1/x"));
    CHECK(!MP("/v[0-9]/x", "/va/x"));
    CHECK(MP("/v[^0-9]/x", "/va/x"));
    CHECK(!MP("/v[0-9/x", "/v1/x")); /* malformed: no match */
    CHECK(MP("/a\\*b", "/a*b"));
    CHECK(!MP("/a\\*b", "/axb"));
}

TEST(match_path_uses_length_not_nul)
{
    CHECK(cfg_match_path("/api", "/api/more", 4));
    CHECK(cfg_match_path("*.js", "/a.jsX", 5));
}

#define MH(pat, host) cfg_match_host((pat), (host), strlen(host))

TEST(match_host_rules)
{
    CHECK(MH("example.com", "example.com"));
    CHECK(MH("example.com", "EXAMPLE.com"));
    CHECK(!MH("example.com", "www.example.com"));
    CHECK(MH("*.example.com", "www.example.com"));
    CHECK(!MH("*.example.com", "a.b.example.com"));
    CHECK(!MH("*.example.com", "example.com"));
    CHECK(MH("*.example.com", "API.Example.COM"));
    CHECK(MH("", "anything.at.all"));
    CHECK(MH("::1", "::1"));
    CHECK(cfg_match_host("a.com", "a.com:443", 5));
    CHECK(!MH("*.*.com", "a.com"));
    CHECK(MH("*.*.com", "a.b.com"));
}

/* ---- production file ---- */

TEST(photospots_production_file)
{
    cfg_t *c = NULL;
    CHECK(cfg_load("../../config/photospots.conf", &c, last_err, sizeof(last_err)) == 0);
    if (!c) {
        fprintf(stderr, "  %s\n", last_err);
        return;
    }
    CHECK_STR(c->email, "admin@photospots.live");
    CHECK_INT(c->timeouts.read_header, 10000);
    CHECK_INT(c->timeouts.idle, 120000);
    CHECK_INT(c->n_listeners, 2); /* :443 and the redirect on :80 */
    CHECK_INT(c->listeners[1].port, 80);
    CHECK_INT(c->listeners[1].redirect_https, 1);
    CHECK_INT(c->listeners[1].n_sites, 0);
    CHECK_INT(c->listeners[0].port, 443);
    CHECK_INT(c->listeners[0].scheme, CFG_SCHEME_HTTPS);
    CHECK_INT(c->n_sites, 1);
    const cfg_site_t *api = &c->sites[0];
    CHECK_STR(api->addrs[0].host, "api.photospots.live");
    CHECK_INT(api->log.enabled, 1);
    CHECK_INT(api->n_handlers, 2);
    CHECK_INT(api->handlers[0].kind, CFG_H_HEADER);
    CHECK_INT(api->handlers[0].u.header.n, 3);
    CHECK_INT(api->handlers[1].kind, CFG_H_PROXY);
    CHECK_STR(api->handlers[1].u.proxy.ups[0].hostport, "localhost:8080");
    CHECK_INT(api->handlers[1].u.proxy.dial_timeout, 5000);
    CHECK_STR(api->handlers[1].u.proxy.health_uri, "/actuator/health");
    CHECK_INT(api->handlers[1].u.proxy.health_interval, 10000);
    CHECK_INT(api->handlers[1].u.proxy.lb_try_duration, 30000);
    cfg_unref(c);
}

TEST(dump_json_is_valid)
{
    cfg_t *c = NULL;
    CHECK(cfg_load("config/good/sites.conf", &c, last_err, sizeof(last_err)) == 0);
    if (!c)
        return;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(cfg_dump_json(c, f) == 0);
    fclose(f);
    CHECK(strstr(buf, "\"upstreams\":\t[\"127.0.0.1:3000\", \"[::1]:3001\", \"backend:80\"]") != NULL);
    CHECK(strstr(buf, "\"kind\":\t\"redir\"") != NULL);
    free(buf);
    cfg_unref(c);
}

TEST(trusted_proxies_ranges_and_private_ranges)
{
    cfg_t *c = NULL;
    const char *text = ":8080 {\n\treverse_proxy 127.0.0.1:9 {\n"
                       "\t\ttrusted_proxies 203.0.113.0/24 2001:db8::/32 private_ranges\n\t}\n}\n";
    c = parse(text);
    if (!c)
        return;
    const cfg_proxy_t *px = &c->sites[0].handlers[0].u.proxy;
    CHECK_INT(px->n_trusted, 8);
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET, "203.0.113.77", &a4.sin_addr);
    CHECK(cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "203.0.114.1", &a4.sin_addr);
    CHECK(!cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "172.31.255.255", &a4.sin_addr);
    CHECK(cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "172.32.0.1", &a4.sin_addr);
    CHECK(!cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a4));
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &a6.sin6_addr);
    CHECK(cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "2001:db8:1::1", &a6.sin6_addr);
    CHECK(cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "2001:db9::1", &a6.sin6_addr);
    CHECK(!cfg_cidr_contains(px->trusted, px->n_trusted, (struct sockaddr *)&a6));
    cfg_unref(c);
}

TEST(trusted_proxies_errors)
{
    CHECK_ERR(":8080 {\n\treverse_proxy 127.0.0.1:9 {\n\t\ttrusted_proxies\n\t}\n}\n",
                    "t.conf:3: trusted_proxies: expected an argument");
    CHECK_ERR(":8080 {\n\treverse_proxy 127.0.0.1:9 {\n\t\ttrusted_proxies 10.0.0.0/33\n"
                    "\t}\n}\n",
                    "t.conf:3: trusted_proxies: expected an IP range like 10.0.0.0/8, got "
                    "\"10.0.0.0/33\"");
}

TEST(request_body_max_size_and_order)
{
    cfg_t *c = parse(":8080 {\n\treverse_proxy 127.0.0.1:9\n\trequest_body /up* {\n"
                     "\t\tmax_size 10MB\n\t}\n}\n");
    if (!c)
        return;
    const cfg_site_t *s = &c->sites[0];
    CHECK_INT(s->n_handlers, 2);
    CHECK_INT(s->handlers[0].kind, CFG_H_REQUEST_BODY); /* before reverse_proxy, as Caddy */
    CHECK_STR(s->handlers[0].match, "/up*");
    CHECK_INT(s->handlers[0].u.request_body.max_size, 10000000);
    cfg_unref(c);
}

TEST(request_body_errors)
{
    CHECK_ERR(":8080 {\n\trequest_body {\n\t\tmax_size lots\n\t}\n}\n",
              "t.conf:3: request_body: max_size: expected a size like 10MB, got \"lots\"");
    CHECK_ERR(":8080 {\n\trequest_body {\n\t\tmin_size 1\n\t}\n}\n",
              "t.conf:3: request_body: min_size: not supported by psproxy");
    CHECK_ERR(":8080 {\n\trequest_body 5\n}\n",
              "t.conf:2: request_body: unexpected argument \"5\"");
}

TEST(https_sites_get_a_redirect_listener_on_http_port)
{
    cfg_t *c = parse("{\n\thttp_port 8080\n\thttps_port 8443\n}\na.com {\n\trespond hi\n}\n"
                     "http://b.com:8080 {\n\trespond plain\n}\n");
    if (!c)
        return;
    CHECK_INT(c->n_listeners, 2);
    CHECK_INT(c->listeners[0].port, 8443);
    CHECK_INT(c->listeners[0].redirect_https, 0);
    CHECK_INT(c->listeners[1].port, 8080);
    CHECK_INT(c->listeners[1].redirect_https, 1); /* and it still serves b.com */
    CHECK_INT(c->listeners[1].n_sites, 1);
    cfg_unref(c);
}

/* Caddy 2.6.2 inserts the HTTPS hosts' redirects before the sites on
 * http_port only when it manages a certificate, or has no site there */
TEST(https_hosts_redirects_come_first_as_caddy_inserts_them)
{
    static const struct {
        const char *text;
        int hosts;
    } cases[] = {
        {"a.com {\n\trespond a\n}\n:80 {\n\trespond b\n}\n", 1},
        {"a.com {\n\ttls c.pem k.pem\n}\n:80 {\n\trespond b\n}\n", 0},
        {"a.com {\n\ttls c.pem k.pem\n}\nhttp://b.com {\n\trespond b\n}\n", 0},
        {"a.com {\n\ttls c.pem k.pem\n}\nb.com {\n\trespond b\n}\n:80 {\n\tlog\n}\n", 1},
        {"a.com {\n\ttls c.pem k.pem\n}\n", 1},
    };
    for (size_t i = 0; i < PS_ARRAY_SIZE(cases); i++) {
        cfg_t *c = parse(cases[i].text);
        CHECK(c != NULL);
        if (!c)
            continue;
        const cfg_listener_t *ln = NULL;
        for (size_t k = 0; k < c->n_listeners; k++)
            if (c->listeners[k].port == 80)
                ln = &c->listeners[k];
        CHECK(ln != NULL && ln->redirect_https == 1);
        if (ln != NULL && ln->redirect_hosts != cases[i].hosts)
            fprintf(stderr, "  case %zu: redirect_hosts %d\n", i, ln->redirect_hosts);
        CHECK(ln != NULL && ln->redirect_hosts == cases[i].hosts);
        cfg_unref(c);
    }
}

TEST(no_redirect_listener_when_redirects_are_off)
{
    const char *forms[] = {"off", "disable_redirects"};
    for (int i = 0; i < 2; i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\n\tauto_https %s\n}\na.com {\n\trespond hi\n}\n",
                 forms[i]);
        cfg_t *c = parse(text);
        if (!c)
            return;
        CHECK_INT(c->n_listeners, 1);
        CHECK_INT(c->listeners[0].port, 443);
        cfg_unref(c);
    }
    cfg_t *c = parse(":8080 {\n\trespond hi\n}\n"); /* no HTTPS site: no redirect */
    if (c)
        CHECK_INT(c->n_listeners, 1);
    cfg_unref(c);
}

TEST(default_sni_option)
{
    cfg_t *c = parse("{\n\tdefault_sni a.com\n}\na.com {\n\trespond hi\n}\n");
    if (!c)
        return;
    CHECK_STR(c->default_sni, "a.com");
    cfg_unref(c);
}

TEST(acme_options)
{
    cfg_t *c = parse("{\n\tacme_profile shortlived\n\tacme_challenges tls-alpn-01\n}\n"
                     "a.com {\n\trespond hi\n}\n");
    if (!c)
        return;
    CHECK_STR(c->acme_profile, "shortlived");
    CHECK_INT(c->acme_challenges, 2);
    cfg_unref(c);
    CHECK_ERR("{\n\tacme_challenges dns-01\n}\n",
              "t.conf:2: acme_challenges: expected http-01 or tls-alpn-01, got \"dns-01\"");
}

TEST(log_output_file_roll_options_are_accepted)
{
    cfg_t *c = parse(":80 {\n\tlog {\n\t\toutput file /var/log/a.log {\n\t\t\troll_size 10mb\n"
                     "\t\t\troll_keep 5\n\t\t}\n\t}\n}\n");
    if (!c)
        return;
    CHECK_STR(c->sites[0].log.file, "/var/log/a.log");
    CHECK_INT(c->sites[0].log.roll_line, 5);
    cfg_unref(c);
    CHECK_ERR(":80 {\n\tlog {\n\t\toutput file /a {\n\t\t\troll_bogus 1\n\t\t}\n\t}\n}\n",
              "t.conf:4: log: output file: roll_bogus: not supported by psproxy");
}

/* Each `header` is a response filter of the requests it matches: a site
 * has room for CFG_MAX_SITE_HEADERS of them, and one more is an error that
 * names its line, never an operation silently dropped. */
TEST(header_directives_beyond_the_filter_chain_are_an_error)
{
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof(text), ":80 {\n");
    for (int i = 0; i < CFG_MAX_SITE_HEADERS; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "\theader X-%d %d\n", i, i);
    snprintf(text + n, sizeof(text) - n, "}\n");
    cfg_t *cfg = parse(text);
    CHECK(cfg != NULL);
    cfg_unref(cfg);
    snprintf(text + n, sizeof(text) - n, "\theader X-Last 1\n}\n");
    char want[128];
    snprintf(want, sizeof(want), "t.conf:%d: header: at most %d header directives in a site",
             CFG_MAX_SITE_HEADERS + 2, CFG_MAX_SITE_HEADERS);
    CHECK_ERR(text, want);
}

TEST_MAIN()
