/* libFuzzer target: the Caddyfile parser (config/caddyfile.c: lexer,
 * imports and snippets; the rest of src/config/: meaning), then the JSON
 * dump of what loaded. Relative imports resolve against tests/unit/config,
 * so "import snippets.conf" and a glob over sites/ reach real files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (chdir(FUZZ_CONFIG_DIR) != 0) {
        perror(FUZZ_CONFIG_DIR);
        abort();
    }
    devnull = fopen("/dev/null", "w");
    if (devnull == NULL)
        abort();
    return 0;
}

static int contains(const char *p, size_t n, const char *s)
{
    return memmem(p, n, s, strlen(s)) != NULL;
}

static const char *strpbrk_n(const char *p, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (strchr(set, p[i]) != NULL && p[i] != '\0')
            return p + i;
    return NULL;
}

/* Whether the import line at P (N bytes to the end) may reach outside the
 * test configs: a device can block (a tty, a fifo) or never end, and the
 * config is the administrator's own, so those inputs are left out. */
static int line_reaches_outside(const char *p, size_t n)
{
    static const char *const outside[] = {"/dev", "/proc", "/sys", "/run", ".."};
    const char *nl = memchr(p, '\n', n);
    size_t len = nl != NULL ? (size_t)(nl - p) : n;
    for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++)
        if (contains(p, len, outside[i]))
            return 1;
    /* an absolute glob may match any of those */
    int absolute = contains(p, len, " /") || contains(p, len, "\t/") ||
                   contains(p, len, "\"/") || contains(p, len, "`/");
    return absolute && strpbrk_n(p, len, "*?[") != NULL;
}

static int may_import_outside(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    /* env values may name any path once substituted */
    if (contains(p, size, "{$") && contains(p, size, "import"))
        return 1;
    while ((p = memmem(p, (size_t)(end - p), "import", 6)) != NULL) {
        if (line_reaches_outside(p, (size_t)(end - p)))
            return 1;
        p += 6;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (may_import_outside(data, size))
        return 0;
    cfg_t *cfg = NULL;
    char err[512];
    if (cfg_parse("fuzz.conf", (const char *)data, size, &cfg, err, sizeof(err)) == 0) {
        if (cfg_dump_json(cfg, devnull) != 0)
            abort(); /* /dev/null takes everything */
        cfg_unref(cfg);
    } else if (cfg != NULL || err[0] == '\0') {
        abort(); /* a failed load says why and leaves nothing behind */
    }
    return 0;
}
