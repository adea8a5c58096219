"""Selects the decoder implementation: the compiled one when it is built, else the pure-Python twin.

``SONICSSE_NO_EXTENSIONS=1`` in the environment forces the pure twin.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["IMPLEMENTATION", "SSEDecoder"]

IMPLEMENTATION: str

if TYPE_CHECKING or os.environ.get("SONICSSE_NO_EXTENSIONS"):
    from ._parser_py import SSEDecoder

    IMPLEMENTATION = "py"
else:
    try:
        from ._parser_c import SSEDecoder

        IMPLEMENTATION = "c"
    except ImportError:
        from ._parser_py import SSEDecoder

        IMPLEMENTATION = "py"
