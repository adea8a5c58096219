"""Session fixtures that run real third-party servers on loopback for the interop tests.

Each server is started once per session, in its own process, on free ports, and stopped at the end
of the session (or when its fixture's setup fails):

- uvicorn (h11, and httptools when installed) serving interop_app (sse-starlette);
- hypercorn serving the same app over TLS, HTTP/2 and HTTP/1.1 (ALPN);
- the standard library's http.server as an HTTP/1.0 origin (close-delimited bodies);
- nginx over http, https and HTTP/2, on 127.0.0.1 and [::1]: static files (Content-Length),
  proxy_pass to uvicorn (chunked, or close-delimited with chunked_transfer_encoding off) and gzip;
- tinyproxy and proxy.py as HTTP proxies, each also with Basic auth.

Every test in this folder is marked ``interop``: ``pytest -m "not interop"`` leaves them out.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .interop_content import big_body, small_body, tokens_body
from .interop_support import (
    HERE,
    Certs,
    Nginx,
    Origin,
    Proxy,
    has_ipv6_loopback,
    require_binary,
    require_module,
    running,
    start_server,
    url_host,
)

PROXY_USER = "sse-user"
PROXY_PASSWORD = "s3cret-pw"
# The ``interop`` marker is registered in pyproject.toml. The proxy settings of the environment of the
# test run are dropped by tests/conftest.py, for these tests too: a test that wants one sets it.


@pytest.fixture(scope="session")
def interop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder for the servers' configuration, files and logs (one subfolder each)."""
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="session")
def ipv6() -> bool:
    """True when this machine has an IPv6 loopback."""
    return has_ipv6_loopback()


@pytest.fixture(scope="session")
def certs(interop_dir: Path) -> Certs:
    """A trustme CA and a server certificate for the TLS servers, written as PEM files."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")
    folder = interop_dir / "certs"
    folder.mkdir()
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    with open(cert_file, "wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return Certs(ca_file, cert_file, key_file)


def _uvicorn(interop_dir: Path, http: str, host: str = "127.0.0.1") -> Iterator[Origin]:
    require_module("uvicorn")
    require_module("sse_starlette")
    if http == "httptools":
        require_module("httptools")
    name = f"uvicorn-{http}" + ("-v6" if ":" in host else "")
    server = start_server(
        name,
        interop_dir / name,
        lambda ports: [
            sys.executable, "-m", "uvicorn", "interop_app:app", "--app-dir", HERE,
            "--host", host, "--port", ports[0], "--http", http, "--loop", "asyncio",
            "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "1",
        ],
        [host],
    )  # fmt: skip
    with running(server):
        yield Origin(f"http://{url_host(host)}:{server.port}", server)


@pytest.fixture(scope="session")
def uvicorn_h11(interop_dir: Path) -> Iterator[Origin]:
    """uvicorn with the h11 HTTP implementation, serving interop_app."""
    yield from _uvicorn(interop_dir, "h11")


@pytest.fixture(scope="session")
def uvicorn_httptools(interop_dir: Path) -> Iterator[Origin]:
    """uvicorn with the httptools HTTP implementation, serving interop_app."""
    yield from _uvicorn(interop_dir, "httptools")


@pytest.fixture(scope="session")
def hypercorn_tls(interop_dir: Path, certs: Certs) -> Iterator[Origin]:
    """hypercorn over TLS serving interop_app: HTTP/2 or HTTP/1.1, by ALPN."""
    require_module("hypercorn")
    require_module("sse_starlette")
    server = start_server(
        "hypercorn",
        interop_dir / "hypercorn",
        lambda ports: [
            sys.executable, "-m", "hypercorn", "interop_app:app",
            "--bind", f"127.0.0.1:{ports[0]}", "--certfile", certs.cert_file, "--keyfile", certs.key_file,
            "--workers", "1", "--graceful-timeout", "1", "--log-level", "WARNING",
        ],
    )  # fmt: skip
    with running(server):
        yield Origin(f"https://127.0.0.1:{server.port}", server)


def _http10(interop_dir: Path, host: str) -> Iterator[Origin]:
    name = "http10" + ("-v6" if ":" in host else "")
    server = start_server(
        name,
        interop_dir / name,
        lambda ports: [sys.executable, HERE / "interop_http10.py", host, ports[0]],
        [host],
    )
    with running(server):
        yield Origin(f"http://{url_host(host)}:{server.port}", server)


@pytest.fixture(scope="session")
def http10(interop_dir: Path) -> Iterator[Origin]:
    """The standard library's http.server answering HTTP/1.0 with close-delimited event streams."""
    yield from _http10(interop_dir, "127.0.0.1")


@pytest.fixture(scope="session")
def http10_v6(interop_dir: Path, ipv6: bool) -> Iterator[Origin]:
    """The HTTP/1.0 origin on [::1]."""
    if not ipv6:
        pytest.skip("this machine has no IPv6 loopback")
    yield from _http10(interop_dir, "::1")


NGINX_CONF = """\
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ }}
    default_type text/event-stream;
    keepalive_timeout 30s;
    ssl_certificate {cert};
    ssl_certificate_key {key};

    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 16;
    }}

    server {{
{listen}
        root {dir}/www;

        # The client's address and the request's HTTP version, as one event.
        location = /peer {{
            return 200 "data: $remote_addr $server_protocol\\n\\n";
        }}
        # Static files: Content-Length. POST gets the file too (nginx answers 405 to a POST to a file).
        location /static/ {{
            error_page 405 =200 $uri;
        }}
        # The same files gzip-compressed: chunked, no Content-Length.
        location /gzip-static/ {{
            alias {dir}/www/static/;
            gzip on;
            gzip_types text/event-stream;
            gzip_min_length 0;
            gzip_proxied any;
            error_page 405 =200 $uri;
        }}
        # proxy_pass to the app, unbuffered: chunked.
        location /chunked/ {{
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
        # The same without chunked encoding: close-delimited.
        location /close/ {{
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            chunked_transfer_encoding off;
        }}
        # The same, gzip-compressed as it streams.
        location /gzip/ {{
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            gzip on;
            gzip_types text/event-stream;
            gzip_min_length 0;
            gzip_proxied any;
        }}
    }}
}}
"""


@pytest.fixture(scope="session")
def nginx(interop_dir: Path, certs: Certs, uvicorn_h11: Origin, ipv6: bool) -> Iterator[Nginx]:
    """nginx on http, https and https + HTTP/2, on 127.0.0.1 and [::1], in front of uvicorn_h11."""
    binary = require_binary("nginx")
    folder = interop_dir / "nginx"
    static = folder / "www" / "static"
    static.mkdir(parents=True)
    (static / "events.sse").write_bytes(small_body())
    (static / "big.sse").write_bytes(big_body())
    (static / "tokens.sse").write_bytes(tokens_body())
    hosts = ["127.0.0.1"] * 3 + (["::1"] * 3 if ipv6 else [])
    suffixes = ["", " ssl", " ssl http2"] * 2

    def command(ports: list[int]) -> list[object]:
        listen = "\n".join(
            f"        listen {url_host(h)}:{p}{s};"
            for h, p, s in zip(hosts, ports, suffixes[: len(hosts)], strict=True)
        )
        conf = NGINX_CONF.format(
            dir=folder,
            cert=certs.cert_file,
            key=certs.key_file,
            app_port=uvicorn_h11.server.port,
            listen=listen,
        )
        (folder / "nginx.conf").write_text(conf)
        return [
            binary, "-p", folder, "-c", folder / "nginx.conf", "-e", folder / "error.log",
            "-g", "daemon off; master_process off;",
        ]  # fmt: skip

    server = start_server("nginx", folder, command, hosts)
    with running(server):
        ports = [p for _, p in server.addresses]
        yield Nginx(
            http=f"http://127.0.0.1:{ports[0]}",
            https=f"https://127.0.0.1:{ports[1]}",
            h2=f"https://127.0.0.1:{ports[2]}",
            http6=f"http://[::1]:{ports[3]}" if ipv6 else None,
            https6=f"https://[::1]:{ports[4]}" if ipv6 else None,
            h2_6=f"https://[::1]:{ports[5]}" if ipv6 else None,
            https_port=ports[1],
            https6_port=ports[4] if ipv6 else None,
            server=server,
        )


def _tinyproxy(interop_dir: Path, name: str, connect_ports: list[int], auth: bool) -> Iterator[Proxy]:
    binary = require_binary("tinyproxy")
    folder = interop_dir / name
    log = folder / "tinyproxy.log"

    def command(ports: list[int]) -> list[object]:
        lines = [
            f"Port {ports[0]}",
            "Listen 127.0.0.1",
            "Timeout 60",
            "MaxClients 64",
            "Allow 127.0.0.1",
            f'LogFile "{log}"',
            "LogLevel Info",
            f'PidFile "{folder}/tinyproxy.pid"',
            *(f"ConnectPort {p}" for p in connect_ports),
        ]
        if auth:
            lines.append(f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}")
        (folder / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
        return [binary, "-d", "-c", folder / "tinyproxy.conf"]

    server = start_server(name, folder, command)
    with running(server):
        credentials = f"{PROXY_USER}:{PROXY_PASSWORD}@" if auth else ""
        yield Proxy(name, f"http://{credentials}127.0.0.1:{server.port}", auth, server, log)


def _proxypy(interop_dir: Path, name: str, auth: bool) -> Iterator[Proxy]:
    require_module("proxy")
    folder = interop_dir / name
    log = folder / "proxy.log"
    extra = ["--basic-auth", f"{PROXY_USER}:{PROXY_PASSWORD}"] if auth else []
    server = start_server(
        name,
        folder,
        lambda ports: [
            sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", ports[0],
            "--num-acceptors", "1", "--num-workers", "1", "--timeout", "60",
            "--log-level", "INFO", "--log-file", log, *extra,
        ],
    )  # fmt: skip
    with running(server):
        credentials = f"{PROXY_USER}:{PROXY_PASSWORD}@" if auth else ""
        yield Proxy(name, f"http://{credentials}127.0.0.1:{server.port}", auth, server, log)


def _connect_ports(nginx: Nginx, hypercorn_tls: Origin) -> list[int]:
    """The TLS origins' ports: tinyproxy refuses CONNECT to any other (and by default to all but 443)."""
    ports = [nginx.https_port, hypercorn_tls.server.port]
    return ports if nginx.https6_port is None else [*ports, nginx.https6_port]


@pytest.fixture(scope="session")
def tinyproxy(interop_dir: Path, nginx: Nginx, hypercorn_tls: Origin) -> Iterator[Proxy]:
    """tinyproxy, open to 127.0.0.1, CONNECT allowed to the TLS origins' ports."""
    yield from _tinyproxy(interop_dir, "tinyproxy", _connect_ports(nginx, hypercorn_tls), False)


@pytest.fixture(scope="session")
def tinyproxy_auth(interop_dir: Path, nginx: Nginx, hypercorn_tls: Origin) -> Iterator[Proxy]:
    """tinyproxy requiring Basic auth (PROXY_USER, PROXY_PASSWORD)."""
    yield from _tinyproxy(interop_dir, "tinyproxy-auth", _connect_ports(nginx, hypercorn_tls), True)


@pytest.fixture(scope="session")
def proxypy(interop_dir: Path) -> Iterator[Proxy]:
    """proxy.py, no authentication."""
    yield from _proxypy(interop_dir, "proxypy", False)


@pytest.fixture(scope="session")
def proxypy_auth(interop_dir: Path) -> Iterator[Proxy]:
    """proxy.py requiring Basic auth (PROXY_USER, PROXY_PASSWORD)."""
    yield from _proxypy(interop_dir, "proxypy-auth", True)


PROXIES = ["tinyproxy", "tinyproxy_auth", "proxypy", "proxypy_auth"]


@pytest.fixture(params=PROXIES)
def proxy(request: pytest.FixtureRequest) -> Proxy:
    """Each proxy in turn."""
    value: Proxy = request.getfixturevalue(str(request.param))
    return value
