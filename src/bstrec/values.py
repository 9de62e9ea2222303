"""Values as JSON and people should see them: plain Python numbers, ISO times, ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def plain(v):
    """A numpy scalar as the Python value it holds; anything else as it is."""
    return v.item() if hasattr(v, "item") else v


def iso_time(ts) -> str:
    """Unix seconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(int(ts), tz=UTC).isoformat()


def plain_id(raw):
    """A raw id as JSON should show it: a number when it is one ('42' and np.int64(42)
    -> 42), else the text as given ('zz')."""
    raw = plain(raw)
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw) and str(int(raw)) == raw:
        return int(raw)
    return raw
