"""HTTP URLs given on the command line (``--endpoint``, ``--prometheus-url``), checked before anything connects."""

from __future__ import annotations

from urllib.parse import urlsplit

from icd.errors import UserError


def http_url(value: str, what: str) -> str:
    """``value`` as an ``http(s)://HOST[:PORT][/path]`` URL without a trailing ``/``.

    Raises:
        UserError: one line naming ``what`` (the option), the value and what is wrong with it.
    """
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{what} {value!r}: expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000")
    try:
        port = parts.port  # ValueError for a port that is not a number or is past 65535
    except ValueError:
        raise UserError(f"{what} {value!r}: the port is not a number in 1..65535") from None
    if port == 0:
        raise UserError(f"{what} {value!r}: the port is not a number in 1..65535")
    return text.rstrip("/")


def url_option(value: str | None, option: str) -> str | None:
    """A typer option callback's body: ``value`` checked by :func:`http_url` (None passes)."""
    return None if value is None else http_url(value, option)
