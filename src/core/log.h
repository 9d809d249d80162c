/* Logging to stderr, one line per event, with a level. Under systemd
 * (JOURNAL_STREAM set) each line starts with a <N> priority prefix. */
#ifndef PS_LOG_H
#define PS_LOG_H

enum log_level {
    LOG_ERR = 3,
    LOG_WARN = 4,
    LOG_INFO = 6,
    LOG_DEBUG = 7,
};

void log_init(void);
void log_set_level(int level);

/* The most verbose level logged; set once at start (log_init,
 * log_set_level). Read inline: a debug line on the hot path costs a load
 * and a compare when it is off. */
extern int log_max_level;

static inline int log_enabled(int level)
{
    return level <= log_max_level;
}

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)

#endif
