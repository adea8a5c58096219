"""Which proxy a request goes through: an explicit ``proxy=`` URL, or the environment's, as httpx and
requests read it.

``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (and their lower-case forms, which win)
are read once, when the client is made. With no ``NO_PROXY``, loopback addresses go through the proxy
too. Only ``http://`` proxies are supported: https targets are reached through a ``CONNECT`` tunnel,
plain http targets by sending the absolute URL to the proxy.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

from ._logging import REDACTED

__all__ = ["ProxyRoutes", "ProxyURL", "format_host", "parse_proxy_url"]


def format_host(host: str, port: int) -> str:
    """``host:port`` as it goes in a request line or a ``Host`` header (an IPv6 address in brackets)."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True)
class ProxyURL:
    """An ``http://`` proxy: where it listens and the Basic credentials it wants, if any."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The proxy's URL without credentials."""
        return f"http://{format_host(self.host, self.port)}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header value, or None without credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def credentials(self) -> str | None:
        """``user:password`` for aiosonic's ``Proxy``, or None."""
        if self.username is None:
            return None
        return f"{self.username}:{self.password or ''}"

    def __str__(self) -> str:
        """The URL fit for logs and messages: credentials redacted."""
        if self.username is None:
            return self.url
        return f"http://{REDACTED}@{format_host(self.host, self.port)}"


def parse_proxy_url(url: str) -> ProxyURL:
    """Parse ``http://[user:password@]host[:port]`` (``http://`` is assumed without a scheme).

    Raises:
        ValueError: not an http proxy URL (``https://`` and ``socks5://`` proxies are not supported), or
            no host, or a bad port. The message never shows the credentials.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    shown = str(_redacted(parts.scheme, parts.netloc))
    if scheme != "http":
        raise ValueError(f"unsupported proxy {shown}: only http:// proxies are supported")
    if not parts.hostname:
        raise ValueError(f"invalid proxy URL {shown}: no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"invalid proxy URL {shown}: bad port") from None
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyURL(parts.hostname, port, username, password)


def _redacted(scheme: str, netloc: str) -> str:
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    return f"{scheme}://{netloc}"


class ProxyRoutes:
    """The proxy of each request: the explicit one, else (with ``trust_env``) the environment's."""

    __slots__ = ("_environment", "_explicit", "_proxies")

    def __init__(self, proxy: str | None = None, trust_env: bool = True) -> None:
        self._explicit = parse_proxy_url(proxy) if proxy is not None else None
        self._environment: dict[str, str] = {}
        # The environment's proxies by scheme ("http", "https", "all"), parsed once: a bad proxy
        # variable fails here, not on a request.
        self._proxies: dict[str, ProxyURL] = {}
        if self._explicit is None and trust_env:
            self._environment = getproxies_environment()
            self._proxies = {
                name: parse_proxy_url(self._environment[name])
                for name in ("http", "https", "all")
                if self._environment.get(name)
            }

    def for_url(self, scheme: str, host: str, port: int) -> ProxyURL | None:
        """The proxy for a request to ``scheme://host:port``, or None to connect directly."""
        if self._explicit is not None:
            return self._explicit
        proxy = self._proxies.get(scheme) or self._proxies.get("all")
        if proxy is None or _bypassed(host, port, self._environment):
            return None
        return proxy


def _bypassed(host: str, port: int, env: dict[str, str]) -> bool:
    """``NO_PROXY``: ``*``; host names, matched as a suffix (with or without a leading dot), optionally
    with ``:port``; IP addresses and CIDR ranges (``127.0.0.0/8``, ``::1``)."""
    no_proxy = env.get("no", "")
    if not no_proxy:
        return False
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None:
        return bool(proxy_bypass_environment(f"{host}:{port}", env))
    for entry in (item.strip() for item in no_proxy.split(",")):
        if entry == "*":
            return True
        try:
            if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                return True
        except ValueError:
            continue
    return False
