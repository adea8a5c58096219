"""A spec-literal reference decoder: the WHATWG "event stream interpretation" in the fewest lines.

It decodes the whole stream at once, exactly as the spec words it, so it shares no code or structure with
the incremental decoders it checks (tests/test_decoder_differential.py and tests/fuzz/fuzz_decoder.py).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

BOM = b"\xef\xbb\xbf"


def reference(
    stream: bytes, last_event_id: str = "", comments: list[tuple[int, str]] | None = None
) -> tuple[list[dict[str, Any]], str, int | None]:
    """The WHATWG "event stream interpretation", step by step, on the whole stream at once.

    ``comments``, when given, receives each comment line's text (without the colon and one leading space)
    with the number of events dispatched before it: its place among the events.
    """
    # The UTF-8 decode algorithm strips one leading BOM and turns invalid bytes into U+FFFD.
    text = stream.decode("utf-8-sig" if stream.startswith(BOM) else "utf-8", "replace")
    events: list[dict[str, Any]] = []
    data: list[str] = []
    event_type = ""
    id_buffer = last_event_id
    own_id: str | None = None
    own_retry: int | None = None
    retry: int | None = None
    position = 0
    # Only terminated lines are processed: an unterminated last line is never seen.
    for match in re.finditer(r"\r\n|\r|\n", text):
        line = text[position : match.start()]
        position = match.end()
        if line == "":
            last_event_id = id_buffer
            if data:
                events.append(
                    {"data": "\n".join(data), "event": event_type or None, "id": own_id, "retry": own_retry}
                )
            data, event_type, own_id, own_retry = [], "", None, None
            continue
        if line.startswith(":"):
            if comments is not None:
                comment = line[1:]
                comments.append((len(events), comment[1:] if comment.startswith(" ") else comment))
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            if "\0" not in value:
                id_buffer = own_id = value
        elif field == "retry" and value and all("0" <= c <= "9" for c in value):
            # A value with more digits than int() converts (sys.get_int_max_str_digits()) is ignored.
            with contextlib.suppress(ValueError):
                retry = own_retry = int(value)
    return events, last_event_id, retry
