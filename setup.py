"""Build script: compiles ext/*.pyx (sonicsse._decoder_c, _events_c, _chunked_c, _receiver_c), or installs
the pure package.

The extension is skipped, with a banner saying why, when ``SONICSSE_NO_EXTENSIONS`` is set, on an
interpreter other than CPython, or when compiling fails (no compiler, no Cython): sonicsse then runs on
its pure-Python decoder, which behaves identically, only slower.
"""

from __future__ import annotations

import os
import platform
import sys
import traceback

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BANNER_WIDTH = 78


def banner(*lines: str) -> None:
    rule = "*" * BANNER_WIDTH
    print(rule, *lines, rule, sep="\n", file=sys.stderr)


def switched_off(value: str | None) -> bool:
    """As ``sonicsse._impl.switched_off``: ``0``, ``false``, ``no``, ``off`` and empty mean "not set"."""
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def skip_reason() -> str | None:
    if switched_off(os.environ.get("SONICSSE_NO_EXTENSIONS")):
        return "SONICSSE_NO_EXTENSIONS is set"
    if platform.python_implementation() != "CPython":
        return f"{platform.python_implementation()} is not CPython"
    return None


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python package when the extension cannot be built."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self.report_failure(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.report_failure(exc)

    @staticmethod
    def report_failure(exc: Exception) -> None:
        traceback.print_exc()
        banner(
            "WARNING: the sonicsse C extension could not be built:",
            f"  {type(exc).__name__}: {exc}",
            "sonicsse is installed with its pure-Python decoder (same behaviour, slower).",
        )


def extensions() -> list[Extension]:
    reason = skip_reason()
    if reason:
        banner(f"sonicsse: not building the C extension ({reason}); installing the pure-Python package.")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        banner("sonicsse: Cython is not installed; installing the pure-Python package (slower).")
        return []
    exts = [
        Extension("sonicsse._decoder_c", ["ext/_decoder_c.pyx"]),
        Extension("sonicsse._events_c", ["ext/_events_c.pyx"]),
        Extension("sonicsse._chunked_c", ["ext/_chunked_c.pyx"]),
        Extension("sonicsse._receiver_c", ["ext/_receiver_c.pyx"]),
    ]
    return cythonize(exts, compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
