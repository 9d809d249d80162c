/* An HTTP/2 stream's exchange: what the session (h2.c) asks of the
 * exchange that carries a stream's request, and the transport ops the
 * exchange gets back (write as DATA, read through the stream's window, end
 * or reset the stream). The connection hands these to its session. */
#ifndef PS_STREAM_H
#define PS_STREAM_H

#include <sys/types.h>

#include "exchange.h"
#include "h2.h"

/* A new stream S of the connection whose exchange is PARENT (who the
 * client is, the config) and whose TLS session is TLS: an exchange
 * waiting for its head. */
exchange_t *stream_open(const exchange_t *parent, tls_conn_t *tls, h2_stream_t *s);
/* The request head, HEAD..LEN as HTTP/1.1, or -status to answer. */
void stream_head(exchange_t *x, char *head, int len);
/* Request body bytes: copies what fits into the exchange's buffer. */
ssize_t stream_body(exchange_t *x, const char *data, size_t len);
size_t stream_buffered(const exchange_t *x);
/* New body bytes or the request's end. */
void stream_input(exchange_t *x);
/* DATA frames took what the exchange last wrote. */
void stream_written(exchange_t *x);
/* The stream is gone (reset, or the session ends). */
void stream_close(exchange_t *x);
/* Bytes of a stream's exchange (the worker pools them: stream_xs). */
size_t stream_size(void);

#endif
