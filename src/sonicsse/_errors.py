"""Messages a person reads, for the failures of an attempt to open a stream.

``describe_failure()`` names what failed, where, and the likely cause, from the exception that a request
raised (the exception itself stays chained to the error the user gets).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from urllib.parse import urlsplit

from ._proxy import format_host
from ._seam import ConnectionDisconnected, ConnectTimeout, ReadTimeout, RequestTimeout
from ._tunnel import ProxyError

__all__ = ["describe_failure"]


def _where(url: str) -> tuple[str, str]:
    """``(host:port, scheme)`` of ``url``."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        return format_host(parts.hostname or "?", port), scheme
    except ValueError:
        return url, ""


def describe_failure(exc: BaseException, url: str) -> str:
    """What went wrong when a request to ``url`` raised ``exc``, in a few words."""
    where, scheme = _where(url)
    host = where.rpartition(":")[0].strip("[]")
    if isinstance(exc, ProxyError):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return f"TLS certificate verification failed for {where}: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return f"TLS handshake with {where} failed: the server did not answer TLS (is it http://?)"
        return f"TLS handshake with {where} failed: {reason}"
    if isinstance(exc, socket.gaierror):
        return f'cannot resolve host "{host}": {exc.strerror or exc}'
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (is the server running, on this port?)"
    if isinstance(exc, ConnectTimeout):
        hint = " (a TLS handshake that never ends often means the server speaks plain http)"
        return f"could not connect to {where} in time" + (hint if scheme == "https" else "")
    if isinstance(exc, (ReadTimeout, RequestTimeout, asyncio.TimeoutError)):
        return f"{where} accepted the connection but sent no response in time"
    if isinstance(exc, ConnectionDisconnected):
        return f"{where} closed the connection before answering"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {where}"
    if isinstance(exc, ConnectionError):
        return f"connection to {where} failed: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {where}: {exc.strerror}"
    detail = str(exc)
    return f"request to {where} failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
