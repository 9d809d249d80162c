/* Project-wide helpers: error codes (errors.h) and container_of. */
#ifndef PS_COMMON_H
#define PS_COMMON_H

#include <stddef.h>
#include <uv.h>

#include "errors.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#define PS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#ifndef PSPROXY_VERSION
#define PSPROXY_VERSION "0.0.0"
#endif

#endif
