"""Per-frame nodes, made on a frame's first visit and afterwards only shown or hidden.

Playback and frame stepping land on frame times; showing a frame that was seen before is
then two visibility updates (a few bytes), not its points or picture again, as in the
release's viewer. The nodes stay in every browser (and are sent to a new one), so a layer
caches only when all its frames fit its budget; a longer clip redraws one node in place.
"""

from __future__ import annotations

from typing import Any, Callable, Optional


class FrameCache:
    def __init__(self, make: Callable[[int], Any]) -> None:
        """``make(frame)`` adds a frame's node, visible."""
        self._make = make
        self._nodes: dict[int, Any] = {}
        self.shown: Optional[int] = None

    def show(self, frame: Optional[int]) -> None:
        """Show the node of ``frame`` (making it on a first visit) and hide the one shown before; None hides all."""
        if frame == self.shown:
            return
        if self.shown in self._nodes:
            self._nodes[self.shown].visible = False
        self.shown = frame
        if frame is None:
            return
        if frame in self._nodes:
            self._nodes[frame].visible = True
        else:
            self._nodes[frame] = self._make(frame)

    def node(self, frame: int) -> Optional[Any]:
        return self._nodes.get(frame)

    def nodes(self) -> list[Any]:
        return list(self._nodes.values())

    def clear(self) -> None:
        """Remove every node (their content is out of date); the next :meth:`show` makes them anew."""
        for node in self._nodes.values():
            node.remove()
        self._nodes.clear()
        self.shown = None
