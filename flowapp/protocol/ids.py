"""What an id from the wire may look like: session ids, carrier stream and call ids.

The platform's session ids are UUIDs and carriers' stream ids are short tokens, but other platforms choose
their own. So any printable ASCII is taken, up to a length that keeps every log line, registry key and
outbound frame small.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128
_ID = re.compile(r"[\x21-\x7e]+")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and _ID.fullmatch(value) is not None
