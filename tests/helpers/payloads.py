"""Crafted files for the trust tests: a pickled object whose unpickling would run code (it writes a
marker file), and the checks the tests make around loading one."""
from __future__ import annotations


class Payload:
    """Unpickled by a full unpickler, it writes ``marker``: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def one_line(text: str) -> bool:
    """Whether ``text`` is one line and no traceback."""
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


def attempt(load) -> BaseException | None:
    """The exception ``load()`` raised, or None: the tests check the marker before the error."""
    try:
        load()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None
