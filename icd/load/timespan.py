"""Durations as users write them: ``"300"``, ``"45s"``, ``"5m"``, ``"1h30m"``, ``"2.5s"`` (Locust's timespan)."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_timespan(text: str | float | int) -> float:
    """Seconds in ``text``: a bare number is seconds; otherwise a sequence of ``<number><h|m|s|ms>`` parts.

    Raises:
        ValueError: naming the text when it is empty, negative or not a duration.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = text.strip().lower().replace(" ", "")
        if not raw:
            raise ValueError("duration: empty; write e.g. 300, 45s, 5m or 1h30m")
        try:
            value = float(raw)
        except ValueError:
            pos, value = 0, 0.0
            for match in _PART.finditer(raw):
                if match.start() != pos:
                    break
                value += float(match.group(1)) * _UNIT_S[match.group(2)]
                pos = match.end()
            if pos != len(raw) or pos == 0:
                raise ValueError(f"duration: {text!r} is not a duration; write e.g. 300, 45s, 5m or 1h30m") from None
    if value < 0 or value != value:
        raise ValueError(f"duration: {text!r} must be >= 0 seconds")
    return value
