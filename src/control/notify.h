/* systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.
 * Without the variable (not under systemd, Type=notify) it does nothing. */
#ifndef PS_NOTIFY_H
#define PS_NOTIFY_H

/* Sends MSG ("READY=1", "STOPPING=1", ...). Returns 0, or -1 when the
 * socket is named but cannot be reached (logged). */
int notify_send(const char *msg);

#endif
