"""Every value a browser sends, checked at the edge, before viser takes it.

How a GUI update arrives in viser 1.1: the browser sends ``GuiUpdateMessage(uuid,
{"value": v})``; the server's handler casts ``v`` to the type of the handle's value,
stores it, sends it to every other browser and only then runs the handle's callbacks. The
handler also takes any other property a message names (``min``, ``max``, ``options``, even
the handle's list of callbacks). Checks inside the callbacks would come too late: a NaN
would already be stored and sent on, a 1 MB text copied to every browser.

So :class:`Inputs` puts a gate in front of that handler. Each input of the panel is added
with its rule: :class:`Number` (finite, clamped to the control's range, whole where the
slider is), :class:`Choice` (one of the dropdown's own options), :class:`Text` (bounded
length; what the text means is parsed where it is used, see :meth:`Inputs.refuse`),
:class:`Toggle` and :class:`Click`. A message that a browser never sends (another
property, an unknown shape) is dropped; a refused value is dropped too, the browser that
sent it gets a notification naming the control and the value (cut short), and its control
is set back to the last good value. A clamped value goes on clamped, and every browser is
told the value that was kept. The gate runs on viser's event loop, so every check is a
few comparisons: nothing it does grows with what was sent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Union

import viser
from viser._messages import GuiUpdateMessage

from tracefield.errors import TracefieldError
from viewer.notices import shown, tell

log = logging.getLogger(__name__)

NOTICES_PER_SECOND = 10  # refusal notices to one browser about one control: sending bad values in a loop gets no more


MAX_NOTICED = 4096  # (browser, control) pairs remembered for that


class Refused(ValueError):
    """A value a control does not take; the message says why, after the value."""


@dataclass(frozen=True)
class Number:
    """A slider: a finite number, clamped to ``lo..hi``; a whole number when ``integer``."""

    lo: float
    hi: float
    integer: bool = False

    def check(self, value: Any, handle: Any) -> Union[int, float]:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused("is not a number")
        if not math.isfinite(value):
            raise Refused("is not a finite number")
        clamped = min(max(value, self.lo), self.hi)
        return int(round(clamped)) if self.integer else float(clamped)


@dataclass(frozen=True)
class Choice:
    """A dropdown: one of the options the server gave it (a browser cannot change them, see the module docstring)."""

    def check(self, value: Any, handle: Any) -> str:
        if not isinstance(value, str) or value not in handle.options:
            raise Refused("is not one of the options")
        return value


@dataclass(frozen=True)
class Text:
    """A text box: at most ``max_chars`` characters (its meaning is checked where it is used)."""

    max_chars: int

    def check(self, value: Any, handle: Any) -> str:
        if not isinstance(value, str):
            raise Refused("is not a text")
        if len(value) > self.max_chars:
            raise Refused(f"is longer than {self.max_chars} characters")
        return value


@dataclass(frozen=True)
class Toggle:
    """A checkbox: true or false."""

    def check(self, value: Any, handle: Any) -> bool:
        if not isinstance(value, bool):
            raise Refused("is not true or false")
        return value


@dataclass(frozen=True)
class Click:
    """A button: a click carries no value worth keeping."""

    def check(self, value: Any, handle: Any) -> bool:
        return True


Rule = Union[Number, Choice, Text, Toggle, Click]


class Inputs:
    """The panel's inputs with their rules, and the gate in front of viser's GUI-update handler."""

    def __init__(self, server: viser.ViserServer) -> None:
        self._server = server
        self._interface = _gui_interface(server)
        self._inputs: dict[str, tuple[Any, Rule]] = {}
        self._good: dict[str, Any] = {}  # uuid -> last value used successfully (texts, parsed where used)
        self._noticed: dict[tuple[Optional[int], str], deque[float]] = {}  # (browser, control) -> times of the last notices
        self._lock = threading.Lock()
        self._interface._incoming_handlers.setdefault(GuiUpdateMessage, []).insert(0, self._screen)

    def add(self, handle: Any, rule: Rule) -> Any:
        """Put ``handle`` behind the gate with ``rule``; returns the handle."""
        uuid = handle._impl.uuid
        self._inputs[uuid] = (handle, rule)
        self._good[uuid] = handle.value
        return handle

    def accept(self, handle: Any, value: Any) -> None:
        """``value`` of ``handle`` was used successfully: a later refusal sets the control back to it."""
        self._good[handle._impl.uuid] = value

    def refuse(self, client: Optional[viser.ClientHandle], handle: Any, value: Any, reason: str) -> None:
        """Tell the browser that ``value`` of ``handle`` is refused and why; set the control back to its last good value."""
        self._notice(client, handle, value, reason)
        handle.value = self._good[handle._impl.uuid]

    # ------------------------------------------------------------------ the gate (viser's event loop)
    def _screen(self, client_id: int, message: GuiUpdateMessage) -> None:
        entry = self._inputs.get(message.uuid)
        if entry is None:
            return  # not one of ours: viser ignores uuids it does not know
        handle, rule = entry
        updates = message.updates
        if not isinstance(updates, dict) or len(updates) != 1 or "value" not in updates:
            if self.may_tell(client_id, message.uuid):
                log.warning("dropped an update of %r that a browser does not send: %s", handle.label, shown(updates))
            message.uuid = ""  # viser's handler then finds no input and returns
            return
        value = updates["value"]
        try:
            kept = rule.check(value, handle)
        except Refused as exc:
            message.uuid = ""
            self._notice(self._server.get_clients().get(client_id), handle, value, str(exc))
            self._send_value(handle, handle.value)
            return
        message.updates = {"value": kept}
        if isinstance(rule, Number) and not rule.lo <= value <= rule.hi:
            self._notice(self._server.get_clients().get(client_id), handle, value,
                         f"is outside {_num(rule.lo)}..{_num(rule.hi)}; set to {_num(kept)}")
            self._send_value(handle, kept)

    def _send_value(self, handle: Any, value: Any) -> None:
        """Every browser shows ``value`` in the control (the sender's page still shows what it sent).

        Sent once viser's handler has run (it is next on the event loop): its own broadcast of
        a kept value goes to the other browsers only and would replace this one in the queue.
        """
        message = GuiUpdateMessage(handle._impl.uuid, {"value": value})
        self._server.get_event_loop().call_soon(self._interface.queue_message, message)

    def _notice(self, client: Optional[viser.ClientHandle], handle: Any, value: Any, reason: str) -> None:
        if self.may_tell(None if client is None else client.client_id, handle._impl.uuid):
            tell(client, handle.label, f"{shown(value)} {reason}")

    def may_tell(self, client_id: Optional[int], uuid: str) -> bool:
        """Whether to tell (notify, log) about one more refusal of ``uuid`` (or any key) from this browser: not in a flood."""
        now = time.monotonic()
        with self._lock:
            if len(self._noticed) > MAX_NOTICED:  # forget browsers that left
                clients = self._server.get_clients()
                self._noticed = {k: v for k, v in self._noticed.items() if k[0] in clients}
            recent = self._noticed.setdefault((client_id, uuid), deque(maxlen=NOTICES_PER_SECOND))
            if len(recent) == NOTICES_PER_SECOND and now - recent[0] < 1.0:
                return False
            recent.append(now)
            return True


def _num(value: float) -> str:
    return f"{value:g}"


def _gui_interface(server: viser.ViserServer) -> Any:
    """viser's message interface of the server's GUI, whose handler table the gate joins."""
    interface = getattr(server, "_websock_server", None)
    if not isinstance(getattr(interface, "_incoming_handlers", None), dict) or not hasattr(interface, "queue_message"):
        raise TracefieldError(
            f"viser {viser.__version__} dispatches GUI messages differently from 1.1, and the viewer's input checks "
            "cannot see them; install viser 1.1: pip install 'viser>=1.1.1,<1.2'"
        )
    return interface
