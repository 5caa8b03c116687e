"""One-line messages: every error distntk prints goes through :func:`one_line`.

A message is the first non-empty line of a string or of an exception's text
(``strerror`` for an ``OSError``), with control characters shown escaped and the
whole cut to ``limit`` characters, so that no input (a 100,000-character name, a
NUL byte, a dumped array) can turn a one-line error into a page.

:func:`printable` is the same escaping for any string a store provides (a store's
``name``, a member's directory name, a probe label) before it reaches a terminal:
a name holding ``\x1b]...`` or a newline is shown escaped, never interpreted.
"""

from __future__ import annotations

__all__ = ["one_line", "printable"]

LIMIT = 300


def one_line(obj: object, limit: int = LIMIT) -> str:
    """The first line of ``obj`` (a string, or an exception's message), at most ``limit`` characters."""
    if isinstance(obj, BaseException):
        text = getattr(obj, "strerror", None) or str(obj) or type(obj).__name__
    else:
        text = str(obj)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first and isinstance(obj, BaseException):
        first = type(obj).__name__
    first = printable(first)
    if len(first) > limit:
        first = first[: limit - 1] + "…"
    return first


def printable(obj: object) -> str:
    """``str(obj)`` with every control (non-printable) character shown escaped (``\\n``, ``\\x1b``)."""
    text = str(obj)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
