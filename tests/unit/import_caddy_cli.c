/* A stand-in for `psproxy import-caddy` until main.c wires it: runs
 * import_caddy() on its arguments, for tests/integration/test_import_caddy.py.
 * usage: import_caddy_cli CADDY_DIR STORAGE_ROOT [CA_URL] */
#include <stdio.h>

#include "import_caddy.h"

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s CADDY_DIR STORAGE_ROOT [CA_URL]\n", argv[0]);
        return 2;
    }
    return import_caddy(argv[1], argv[2], argc == 4 ? argv[3] : NULL, stdout) == 0 ? 0 : 1;
}
