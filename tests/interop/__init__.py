"""Interop tests: sonicsse against real third-party servers and proxies on loopback.

A package, so that this folder's conftest is imported as ``interop.conftest``: the top-level tests
import names from ``tests/conftest.py`` as ``conftest``, which a second top-level ``conftest`` module
would replace.
"""
