"""The seam to aiosonic: the only package of sonicsse that imports aiosonic or touches its internals.

Its modules: ``_shape`` (``check_shape()``, run on import), ``_connections`` (``HoldingConnection``,
``LazyPool``, ``ConnectionSettings``), ``_h2`` (shared HTTP/2 connections), ``_connector``
(``StreamConnector``, ``make_http_client()``), ``_exchange`` (one request and its response),
``_timeout``. The rest of sonicsse imports from this package only.

aiosonic sends each request (pools, cookies, auth, HTTP/2) and parses the status line and headers;
sonicsse reads the body itself. What crosses this seam:

- ``StreamConnector`` (an aiosonic ``TCPConnector``) makes sonicsse's connections: CONNECT tunnels for
  https through a proxy (``_tunnel``), a forwarding client per proxy for plain http (aiosonic's
  ``Proxy``), pooled sockets reused only with the same route and TLS settings, ``ssl=`` for https only,
  IPv4 and IPv6 addresses tried in the resolver's order.
- ``send_request()`` sends one request, redirects not followed, and ``take_response()`` takes its
  connection out of aiosonic's response: from then on ``_transport`` owns the socket (``handover()``
  says whether the socket can be read directly, exactly) and gives it back (``give_back()``).
- HTTP/2: streams to one https origin with the same connection settings share connections
  (``StreamConnector.acquire``): up to the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS``, at most aiosonic's
  ``Http2Config.max_streams``, per connection; more streams open another one. aiosonic's request code is
  given an ``H2Lease`` (one stream's share) in place of the connection, so what it does to "its"
  connection (close it after a failed request, release it) concerns that stream alone. The connection's
  reader is aiosonic's ``Http2Handler`` subclassed (``StreamH2Handler``): each DATA frame goes straight
  into the stream's ``BodyReceiver`` (``H2Stream``), with no queue and no task per chunk; a stream closed
  unfinished is reset (RST_STREAM CANCEL); the last stream gone, the connection goes back to the pool.

Private names relied on, verified at import by ``check_shape()`` (a mismatch is one ImportError naming
the installed aiosonic):

- ``HttpResponse._connection`` / ``_owns_connection``: the connection is taken from the response, so that
  aiosonic neither releases nor closes it under a body still being read; ``_remaining``: the bytes of a
  ``Content-Length`` body not read yet; ``_h2_chunk_queue``, ``_h2_flow_cb``, ``_discard_h2_queue()``:
  an HTTP/2 stream's queue (unused with sonicsse's handler; from a borrowed client's, read, and
  interrupted) and flow-control callback (sonicsse's handler makes it the ``H2Stream``; a borrowed
  client's closure holds the stream id: to send ``RST_STREAM`` for an abandoned stream, which aiosonic
  does not), and the stream's slot given back.
- ``Connection.reader`` / ``writer`` / ``keep`` / ``key`` / ``blocked`` / ``h2conn`` / ``h2handler`` /
  ``temp_key`` / ``reused`` / ``_verify`` / ``pool.http2_config`` and ``_connection_made()`` (HTTP/2 set
  up after ALPN, with sonicsse's handler, also over a tunnel we opened).
- ``Http2Handler.__init__(connection, http2_config)`` / ``connection`` / ``http2_config`` / ``requests``
  / ``request()`` and, overridden, ``_register_stream()`` / ``_make_flow_cb()`` / ``_on_data_received()``
  / ``_on_stream_ended()`` / ``_on_stream_reset()`` / ``_on_remote_settings_changed()`` /
  ``_on_disconnect()`` / ``_fail_all_pending()``; ``_make_sem_release()`` gives back the slot of a
  request cancelled while it waited for its head (aiosonic keeps it). What aiosonic's request code does
  with the connection it acquired (``_exchange``: ``h2conn``, ``http2_request()``, ``keep_alive()``,
  ``reused``, ``close()``, ``async with``) is what ``H2Lease`` answers.
- ``SmartPool._init_pool()`` / ``_new_connection()`` / ``_free_count`` / ``sem`` / ``pool``: connection
  objects made when first needed, not 1,024 up front.
- ``TCPConnector.acquire()`` / ``after_acquire()`` / ``resolver`` / ``cache`` / ``release()``: sonicsse's
  connect step (and, for HTTP/2, its shared connections).
- asyncio's ``StreamReader._buffer`` / ``_eof`` / ``_paused`` / ``_transport`` and
  ``StreamReaderProtocol._stream_reader``: the bytes aiosonic's reader already holds, and proof that the
  writer's transport (TLS after ``start_tls``) delivers to that reader.

What aiosonic offers and sonicsse does not use, and why:

- Redirects (``follow=True``): aiosonic does not drop ``Authorization`` and cookies when a redirect leaves
  the origin, does not send the new ``Last-Event-ID`` on the next hop, and has no typed error for a
  ``Location`` that cannot be requested; the rules live in ``_policy`` and ``_core``.
- Decompression (``aiosonic.compression.BoundedDecompressor``): it bounds a whole body's output, while an
  event stream has no end; sonicsse bounds each read's output (1 MiB, the rest stays in zlib) and
  accepts the raw deflate some servers send as ``deflate`` (``_transport._Inflater``).
"""

from __future__ import annotations

from aiosonic import HTTPClient
from aiosonic.exceptions import (
    AiosonicError,
    ConnectionDisconnected,
    ConnectTimeout,
    ReadTimeout,
    RequestTimeout,
)
from aiosonic.exceptions import SSEConnectionError as AiosonicSSEConnectionError
from aiosonic.exceptions import SSEParsingError as AiosonicSSEParsingError
from aiosonic.resolver import AbstractResolver, DefaultResolver
from aiosonic.sse_config import RequestConfig
from aiosonic.timeout import Timeouts

from ._connections import DEFAULT_POOL_SIZE, ConnectionSettings, HoldingConnection, LazyPool
from ._connector import StreamConnector, make_http_client
from ._exchange import (
    TakenResponse,
    check_request,
    give_back,
    h2_close,
    h2_interrupt,
    handover,
    is_aiosonic_error,
    reader_transport,
    send_request,
    take_response,
)
from ._h2 import H2Lease, H2Stream, StreamH2Handler
from ._shape import AIOSONIC_VERSION, check_shape

__all__ = [
    "AIOSONIC_VERSION",
    "DEFAULT_POOL_SIZE",
    "AbstractResolver",
    "AiosonicError",
    "AiosonicSSEConnectionError",
    "AiosonicSSEParsingError",
    "ConnectTimeout",
    "ConnectionDisconnected",
    "ConnectionSettings",
    "DefaultResolver",
    "H2Lease",
    "H2Stream",
    "HTTPClient",
    "HoldingConnection",
    "LazyPool",
    "ReadTimeout",
    "RequestConfig",
    "RequestTimeout",
    "StreamConnector",
    "StreamH2Handler",
    "TakenResponse",
    "Timeouts",
    "check_request",
    "check_shape",
    "give_back",
    "h2_close",
    "h2_interrupt",
    "handover",
    "is_aiosonic_error",
    "make_http_client",
    "reader_transport",
    "send_request",
    "take_response",
]
