"""Per-frame nodes, made on a frame's first visit and afterwards only shown or hidden.

Playback and frame stepping land on frame times; showing a frame that was seen before is
then two visibility updates (a few bytes), not its points or picture again, as in the
release's viewer. The nodes stay in every browser (and are sent to a new one), so the
cache keeps a budget: past it, the least recently shown nodes are removed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Optional


class FrameCache:
    def __init__(self, make: Callable[[int], Any], budget: int, cost: Callable[[Any], int] = lambda node: 1) -> None:
        """``make(frame)`` adds a frame's node (visible); ``cost(node)`` counts against ``budget``."""
        self._make, self._budget, self._cost = make, budget, cost
        self._nodes: "OrderedDict[int, tuple[Any, int]]" = OrderedDict()
        self._spent = 0
        self.shown: Optional[int] = None

    def show(self, frame: Optional[int]) -> None:
        """Show the node of ``frame`` (making it on a first visit) and hide the one shown before; None hides all."""
        if frame == self.shown:
            return
        if self.shown in self._nodes:
            self._nodes[self.shown][0].visible = False
        self.shown = frame
        if frame is None:
            return
        if frame in self._nodes:
            self._nodes.move_to_end(frame)
            self._nodes[frame][0].visible = True
        else:
            node = self._make(frame)
            cost = self._cost(node)
            self._nodes[frame] = (node, cost)
            self._spent += cost
        while self._spent > self._budget and len(self._nodes) > 1:
            _, (old, cost) = self._nodes.popitem(last=False)  # least recently shown; never the one just shown
            old.remove()
            self._spent -= cost

    def node(self, frame: int) -> Optional[Any]:
        entry = self._nodes.get(frame)
        return None if entry is None else entry[0]

    def nodes(self) -> list[Any]:
        return [node for node, _ in self._nodes.values()]

    def clear(self) -> None:
        """Remove every node (their content is out of date); the next :meth:`show` makes them anew."""
        for node, _ in self._nodes.values():
            node.remove()
        self._nodes.clear()
        self._spent = 0
        self.shown = None
