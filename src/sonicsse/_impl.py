"""Selects the implementation of the hot path: the compiled modules when they are built, else their
pure-Python twins, which behave identically. All of them are taken from the same side.

``SONICSSE_NO_EXTENSIONS`` set to anything but ``0``, ``false``, ``no``, ``off`` or empty forces the pure
twins. When the compiled modules are missing although they were not switched off (an install that had
no compiler), sonicsse warns once at import, since the pure twins are several times slower.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

__all__ = [
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "BodyReceiver",
    "ChunkedDecoder",
    "EventIterator",
    "SSEDecoder",
    "switched_off",
]


def switched_off(value: str | None) -> bool:
    """Whether a ``SONICSSE_NO_EXTENSIONS`` value asks for the pure twins (``0``, ``false``, ``no``,
    ``off`` and empty do not, as with the aio-libs projects' switches)."""
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


#: The compiled modules were switched off on purpose (``SONICSSE_NO_EXTENSIONS``).
NO_EXTENSIONS = switched_off(os.environ.get("SONICSSE_NO_EXTENSIONS"))

IMPLEMENTATION: str

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._chunked_py import ChunkedDecoder
    from ._decoder_py import SSEDecoder
    from ._events_py import EventIterator
    from ._receiver_py import BodyReceiver

    IMPLEMENTATION = "py"
else:
    try:
        from ._chunked_c import ChunkedDecoder
        from ._decoder_c import SSEDecoder
        from ._events_c import EventIterator
        from ._receiver_c import BodyReceiver

        IMPLEMENTATION = "c"
    except ImportError as missing:
        from ._chunked_py import ChunkedDecoder
        from ._decoder_py import SSEDecoder
        from ._events_py import EventIterator
        from ._receiver_py import BodyReceiver

        IMPLEMENTATION = "py"
        warnings.warn(
            f"sonicsse runs on its pure-Python modules, several times slower: the compiled ones did not "
            f"import ({missing}). Install a wheel, or build with a C compiler and Cython; set "
            "SONICSSE_NO_EXTENSIONS=1 to choose the pure modules and silence this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
