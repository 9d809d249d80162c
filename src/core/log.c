/* Logging to stderr: one line per event, written with one write(2) so lines
 * from worker threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_max_level = LOG_INFO;
static int journal; /* stderr goes to journald: it stamps time, we prefix <N> */

void log_init(void)
{
    journal = getenv("JOURNAL_STREAM") != NULL;
    const char *lvl = getenv("PSPROXY_LOG_LEVEL");
    if (lvl != NULL && strcmp(lvl, "debug") == 0)
        log_max_level = LOG_DEBUG;
}

void log_set_level(int level)
{
    log_max_level = level;
}

static const char *level_name(int level)
{
    switch (level) {
    case LOG_ERR:
        return "error";
    case LOG_WARN:
        return "warn";
    case LOG_INFO:
        return "info";
    default:
        return "debug";
    }
}

void log_msg(int level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[2048];
    int n;
    if (journal) {
        n = snprintf(line, sizeof(line), "<%d>%s: ", level, level_name(level));
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += snprintf(line + n, sizeof(line) - n, ".%03ldZ %s: ", ts.tv_nsec / 1000000,
                      level_name(level));
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
