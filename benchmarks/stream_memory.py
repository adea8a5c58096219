"""Where one open stream's memory goes: RSS, Python allocations by site and by package, objects by type.

    python -m benchmarks.stream_memory                          # sonicsse, 1,000 idle streams, uvloop
    python -m benchmarks.stream_memory --client raw-floor --loop asyncio --streams 500
    python -m benchmarks.stream_memory --tls

Opens ``--streams`` paced streams (one event at once, the next a minute later) through one client in
this process, exactly as ``benchmarks.concurrency`` does, waits until every stream has its first event,
and then compares the process with the one before the streams were opened (after one warm-up stream,
so that import-time caches and the client's shared objects are not counted). RSS comes from a first
batch of streams, the Python allocations and objects from a second one, opened with ``tracemalloc`` on
(whose own records would otherwise count as RSS):

- RSS per stream (``VmRSS``), which also holds what C code allocates (the event loop's handles,
  OpenSSL), outside Python's allocator;
- Python allocations per stream (``tracemalloc``), by allocation site and by package;
- gc-tracked objects per stream, by type, with ``sys.getsizeof`` (containers only: bytes, str and
  bytearray are not gc-tracked, their memory shows under their allocation site).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ssl
import sys
import tempfile
import tracemalloc
from collections import Counter
from typing import Any

from . import concurrency
from .clients import _preimport, _rss_kib
from .e2e import running_server
from .server import raise_fd_limit, tls_files

PACKAGES = ("sonicsse", "aiosonic", "asyncio", "uvloop", "ssl", "h2", "httpx", "httpcore", "aiohttp")


def _package(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    for name in PACKAGES:
        if name in parts or any(p.startswith(name + ".") for p in parts):
            return name
    return "benchmarks" if "benchmarks" in parts else parts[-1]


def _trimmed_rss() -> int:
    """VmRSS after glibc's ``malloc_trim(0)`` gave the heap's free pages back (0 without glibc)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return 0
    return _rss_kib("VmRSS")


def _pymalloc_stats() -> dict[str, int]:
    """pymalloc's totals from ``sys._debugmallocstats()`` (its arenas are not in tracemalloc's count)."""
    import os

    out: dict[str, int] = {}
    with tempfile.TemporaryFile(mode="w+") as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        for line in f:
            key, _, value = line.rpartition("=")
            key, value = key.strip(" #\n"), value.strip().replace(",", "")
            if "unused pools" in key:
                key = "unused pools"
            if value.isdigit() and key and key not in out:  # the first Total is the arenas'
                out[key] = int(value)
    return out


def _pymalloc(before: dict[str, int], n: int) -> str:
    after = _pymalloc_stats()
    parts = []
    for key, label in (
        ("Total", "arenas in use"),
        ("bytes in allocated blocks", "in objects"),
        ("bytes in available blocks", "free in pools"),
        ("unused pools", "empty pools"),
        ("bytes lost to pool headers", "pool headers"),
        ("bytes lost to quantization", "rounding"),
    ):
        found = [k for k in after if k.startswith(key)]
        if found:
            k = found[0]
            parts.append(f"{label} {(after[k] - before.get(k, 0)) / n / 1024:.2f}")
    return ", ".join(parts) + " KiB per stream"


def _types() -> tuple[Counter[str], Counter[str]]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


async def _open(client: str, url: str, streams: int, st: concurrency.StreamStats) -> asyncio.Task[None]:
    task = asyncio.ensure_future(concurrency.RUNNERS[client]([url] * streams, st))
    for _ in range(1200):  # a minute at most
        if st.started >= streams or task.done():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let every stream settle into its wait
    return task


async def measure(args: argparse.Namespace, url: str) -> None:
    """Warm up with one stream, then open the streams and compare."""
    n = args.streams
    warm = concurrency.StreamStats(2, 1)
    task = await _open(args.client, url, 1, warm)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # First batch: RSS and pymalloc's arenas, without tracemalloc (its own records would count).
    st = concurrency.StreamStats(2, n)
    gc.collect()
    rss0 = _rss_kib("VmRSS")
    stats0 = _pymalloc_stats()
    task = await _open(args.client, url, n, st)
    gc.collect()
    rss1 = _rss_kib("VmRSS")
    trimmed = _trimmed_rss()
    pymalloc = _pymalloc(stats0, n)
    # Second batch, as many streams again: Python allocations and objects.
    st2 = concurrency.StreamStats(2, n)
    gc.collect()
    types0 = _types()
    tracemalloc.start(args.frames)
    snap0 = tracemalloc.take_snapshot()
    task2 = await _open(args.client, url, n, st2)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    types1 = _types()
    over = " over TLS" if args.tls else ""
    print(f"{args.client}, {args.loop}{over}: {st.started}+{st2.started}/{2 * n} streams open")
    print(f"RSS: {(rss1 - rss0) / n:.2f} KiB per stream ({rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB)")
    if trimmed:
        kept = (rss1 - trimmed) / n
        after = (trimmed - rss0) / n
        print(f"RSS after malloc_trim(0): {after:.2f} KiB per stream ({kept:.2f} KiB free C heap)")
    print(f"pymalloc: {pymalloc}")
    by_site = snap1.compare_to(snap0, "lineno")
    total = sum(d.size_diff for d in by_site)
    print(
        f"Python allocations (tracemalloc): {total / n / 1024:.2f} KiB per stream, {traced >> 10} KiB in all"
    )
    packages: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for d in by_site:
        name = _package(d.traceback[0].filename)
        packages[name] += d.size_diff
        blocks[name] += d.count_diff
    print("\nby package (where the allocating line is), bytes and blocks per stream:")
    for name, size in packages.most_common():
        if abs(size) >= n * 8:
            print(f"  {name:<24} {size / n:>9.0f} B  {blocks[name] / n:>6.1f}")
    print(f"\ntop {args.top} allocation sites, bytes and blocks per stream:")
    for d in sorted(by_site, key=lambda d: -d.size_diff)[: args.top]:
        frame = d.traceback[0]
        where = "/".join(frame.filename.split("/")[-2:])
        print(f"  {d.size_diff / n:>9.0f} B  {d.count_diff / n:>6.2f}  {where}:{frame.lineno}")
    if args.frames > 1:
        print("\ntop sites with their callers:")
        for stat in snap1.compare_to(snap0, "traceback")[: min(args.top, 12)]:
            print(f"  {stat.size_diff / n:>9.0f} B  {stat.count_diff / n:>6.2f}")
            for line in stat.traceback.format()[-2 * args.frames :]:
                print("      " + line.strip())
    counts0, sizes0 = types0
    counts1, sizes1 = types1
    diffs = [(counts1[t] - counts0[t], sizes1[t] - sizes0[t], t) for t in counts1]
    tracked = sum(count for count, _, _ in diffs)
    print(
        f"\ngc-tracked objects per stream: {tracked / n:.1f} (the cyclic GC visits each on a full collection)"
    )
    print("by type (count, bytes by sys.getsizeof):")
    for count, size, name in sorted(diffs, reverse=True)[: args.top]:
        if count >= n / 2:
            print(f"  {count / n:>6.2f}  {size / n:>7.0f} B  {name}")
    for t in (task, task2):
        t.cancel()
    await asyncio.gather(task, task2, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    """Start the server, run the measurement on the chosen loop."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--client", default="sonicsse", choices=list(concurrency.RUNNERS))
    p.add_argument("--loop", default="uvloop", choices=["asyncio", "uvloop"])
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--frames", type=int, default=1, help="frames kept per allocation (tracemalloc)")
    args = p.parse_args(argv)
    raise_fd_limit()
    library = {"aiosonic-floor": "aiosonic", "aiosonic-pool": "aiosonic"}.get(args.client, args.client)
    if library in ("sonicsse", "aiosonic", "httpx-sse", "launchdarkly"):
        _preimport(library)
    with tempfile.TemporaryDirectory() as tmp:
        cafile, certfile = tls_files(tmp) if args.tls else (None, None)
        with running_server(1.0, [], False, certfile) as port:
            scheme = "https" if args.tls else "http"
            url = f"{scheme}://127.0.0.1:{port}/paced?n=2&interval_us=60000000"
            if cafile:
                concurrency.TLS = ssl.create_default_context(cafile=cafile)
            if args.loop == "uvloop":
                import uvloop

                loop: Any = uvloop.new_event_loop()
            else:
                loop = asyncio.new_event_loop()
            loop.run_until_complete(measure(args, url))
            loop.close()


if __name__ == "__main__":
    main()
