"""Messages to the browsers: one-line notifications, spinners while work runs, guarded callbacks.

Whatever a browser sent may be huge: :func:`shown` is the only way a value gets into a
notification or a log line, cut to a few dozen characters with its full length, so a
1 MB text is never echoed back or logged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Callable, Iterable, Iterator

import viser

from tracefield.errors import TracefieldError

log = logging.getLogger(__name__)

SHOWN_CHARS = 40  # of a value, in a notification or log line
BODY_CHARS = 300  # of any notification body


def shown(value: Any) -> str:
    """``value`` as a short quoted text: cut to :data:`SHOWN_CHARS` characters, with its length when cut."""
    text = value if isinstance(value, str) else repr(value)
    quoted = repr(text[:SHOWN_CHARS]) if isinstance(value, str) else text[:SHOWN_CHARS]
    return quoted if len(text) <= SHOWN_CHARS else f"{quoted}... ({len(text)} characters)"


def tell(client: viser.ClientHandle | None, title: str, body: str, error: bool = True) -> None:
    """One notification in one browser (red for an error), and the same line in the log."""
    body = body[:BODY_CHARS]
    (log.warning if error else log.info)("%s: %s", title, body)
    if client is not None:
        client.add_notification(title, body, color="red" if error else None, auto_close_seconds=10.0 if error else 8.0)


def tell_all(server: viser.ViserServer, title: str, body: str, error: bool = False) -> None:
    """One notification in every connected browser, and one log line."""
    body = body[:BODY_CHARS]
    (log.warning if error else log.info)("%s: %s", title, body)
    for client in server.get_clients().values():
        client.add_notification(title, body, color="red" if error else None, auto_close_seconds=8.0)


@contextlib.contextmanager
def notifying(clients: Iterable[viser.ClientHandle], title: str, body: str) -> Iterator[Callable[[str], None]]:
    """A spinning notification in each browser while the block runs; yields a function that updates its text."""
    notes = [client.add_notification(title, body, loading=True, with_close_button=False) for client in clients]

    def update(text: str) -> None:
        for note in notes:
            note.body = text

    try:
        yield update
    finally:
        for note in notes:
            note.remove()


def guarded(callback: Callable[[Any], Any]) -> Callable[[Any], None]:
    """Run a GUI callback; report any failure to the browser that caused it instead of raising into viser."""

    @functools.wraps(callback)
    def run(event: Any) -> None:
        try:
            callback(event)
        except TracefieldError as exc:
            tell(event.client, "Not possible", str(exc))
        except Exception as exc:  # a client action must never take the server down
            log.exception("GUI action failed")
            tell(event.client, "Something went wrong", f"{type(exc).__name__}: {shown(str(exc))}")

    return run
