"""The package's logger, and what may be logged: URLs and headers with their credentials redacted."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["REDACTED", "is_secret_name", "logger", "redact_headers", "redact_url"]

#: The package's logger: connects and clean-end reconnects at INFO, failed attempts at WARNING, details
#: at DEBUG.
logger = logging.getLogger("sonicsse")

REDACTED = "<redacted>"

# Header and query parameter names whose values are credentials: Authorization, Cookie, X-Api-Key,
# X-Goog-Api-Key, access_token, X-Amz-Signature, Azure's sig, ...
_SECRET_NAME = re.compile(
    r"auth|cookie|key|token|secret|passw|session|signature|credential|^sig$|^code$", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """Whether a header or query parameter of this name carries a credential."""
    return _SECRET_NAME.search(name) is not None


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` fit for logs: credentials and cookies replaced by ``"<redacted>"``."""
    return {name: REDACTED if is_secret_name(name) else value for name, value in headers.items()}


@functools.lru_cache(maxsize=256)  # logged for every stream opened, to a few URLs
def redact_url(url: str) -> str:
    """``url`` fit for logs and messages: no user info, and credential query parameters redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = query.split("&")
        for index, pair in enumerate(pairs):
            name, eq, _ = pair.partition("=")
            if eq and is_secret_name(unquote(name)):
                pairs[index] = f"{name}={REDACTED}"
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
