/* Which CA bundle psproxy trusts on each Linux family (issue #20). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ca_bundle.h"
#include "test.h"

static char dir[] = "/tmp/test_ca_bundle.XXXXXX";

static void remove_dir(void)
{
    rmdir(dir);
}

static const char *path_in_dir(char *out, size_t n, const char *name)
{
    /* once: a made name may end in 'X' as well (1 in 62), so that is no sign */
    static int made;
    if (!made) {
        if (mkdtemp(dir) == NULL)
            abort();
        made = 1;
        atexit(remove_dir);
    }
    snprintf(out, n, "%s/%s", dir, name);
    return out;
}

static void touch(const char *path, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs("-----BEGIN CERTIFICATE-----\n", f);
        fclose(f);
    }
    chmod(path, mode);
}

TEST(first_readable_file_of_the_list_wins)
{
    char debian[256], amazon[256], suse[256];
    path_in_dir(debian, sizeof(debian), "ca-certificates.crt");
    path_in_dir(amazon, sizeof(amazon), "ca-bundle.crt");
    path_in_dir(suse, sizeof(suse), "ca-bundle.pem");
    const char *paths[] = {debian, amazon, suse, NULL};
    int from_env = -1;

    CHECK(ca_bundle_find(paths, NULL, &from_env) == NULL); /* none exists */
    CHECK_INT(from_env, 0);

    touch(suse, 0644);
    touch(amazon, 0644);
    CHECK_STR(ca_bundle_find(paths, NULL, &from_env), amazon); /* Amazon Linux: no Debian file */

    touch(debian, 0644);
    CHECK_STR(ca_bundle_find(paths, NULL, &from_env), debian); /* Debian's comes first */
    unlink(debian);
    unlink(amazon);
    unlink(suse);
}

TEST(ssl_cert_file_overrides_the_list)
{
    char present[256];
    path_in_dir(present, sizeof(present), "present.crt");
    touch(present, 0644);
    const char *paths[] = {present, NULL};
    int from_env = 0;
    CHECK_STR(ca_bundle_find(paths, "/etc/custom/roots.pem", &from_env), "/etc/custom/roots.pem");
    CHECK_INT(from_env, 1);
    CHECK_STR(ca_bundle_find(paths, "", &from_env), present); /* empty means unset */
    CHECK_INT(from_env, 0);
    unlink(present);
}

TEST(every_family_is_in_the_list)
{
    int debian = 0, amazon = 0;
    for (size_t i = 0; ca_bundle_paths[i] != NULL; i++) {
        debian |= strcmp(ca_bundle_paths[i], "/etc/ssl/certs/ca-certificates.crt") == 0;
        amazon |= strcmp(ca_bundle_paths[i], "/etc/pki/tls/certs/ca-bundle.crt") == 0;
    }
    CHECK(debian);
    CHECK(amazon);
}

TEST_MAIN()
