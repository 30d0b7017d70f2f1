"""A client of a running viser server that talks to it the way the browser's page does.

viser's page opens a websocket with the subprotocol ``viser-v<version>``, receives windows
of messages (8 bytes: msgpack size, 8 bytes: compressed size, the zstd-compressed msgpack
``{"messages": [...]}``, then raw array buffers) and sends each change of a control as one
msgpack ``{"type": "GuiUpdateMessage", "uuid": ..., "updates": {"value": ...}}``. This
client keeps every message it receives (arrays left as placeholders) with its arrival time,
finds controls by their label, and can send any update, hostile ones included. Like the
page, it first reports its camera: viser counts a client as connected (and runs the
callbacks of its GUI updates) from that message on.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import msgspec
import viser
import zstandard
from websockets.sync.client import connect


class ViserClient:
    def __init__(self, port: int) -> None:
        self.ws = connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self.received: list[tuple[float, dict]] = []  # (arrival time, message)
        self.bytes = 0
        self._lock = threading.Lock()
        self._zstd = zstandard.ZstdDecompressor()
        threading.Thread(target=self._drain, daemon=True).start()
        self.ws.send(msgspec.msgpack.encode({
            "type": "ViewerCameraMessage", "wxyz": (1.0, 0.0, 0.0, 0.0), "position": (0.0, 0.0, -3.0), "fov": 1.0,
            "near": 0.01, "far": 1000.0, "image_height": 800, "image_width": 1280, "look_at": (0.0, 0.0, 0.0),
            "up_direction": (0.0, -1.0, 0.0),
        }))

    def _drain(self) -> None:
        try:
            for raw in self.ws:
                now = time.perf_counter()
                size, compressed = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
                window = msgspec.msgpack.decode(self._zstd.decompress(raw[16 : 16 + compressed], max_output_size=size))
                with self._lock:
                    self.bytes += len(raw)
                    self.received.extend((now, message) for message in window["messages"])
        except Exception:  # the server closed the connection
            pass

    def close(self) -> None:
        self.ws.close()

    # ------------------------------------------------------------------ reading
    def messages(self, since: float = 0.0) -> list[dict]:
        with self._lock:
            return [message for arrived, message in self.received if arrived >= since]

    def wait_for(self, predicate: Callable[[dict], bool], since: float = 0.0, timeout: float = 10.0) -> tuple[float, dict]:
        """The first message after ``since`` that satisfies ``predicate``, with its arrival time."""
        deadline, seen = time.perf_counter() + timeout, 0
        while time.perf_counter() < deadline:
            with self._lock:
                fresh = self.received[seen:]
            seen += len(fresh)
            for arrived, message in fresh:
                if arrived >= since and predicate(message):
                    return arrived, message
            time.sleep(0.002)
        raise AssertionError(f"no such message from the server within {timeout} s")

    def control(self, label: str) -> str:
        """The uuid of the control labelled ``label`` (from the server's messages that add it)."""
        for message in self.wait_until_added(label):
            return message["uuid"]
        raise AssertionError(label)

    def wait_until_added(self, label: str, timeout: float = 30.0) -> list[dict]:
        _, message = self.wait_for(lambda m: isinstance(m.get("props"), dict) and m["props"].get("label") == label
                                   and m["type"].startswith("Gui"), timeout=timeout)
        return [message]

    def value_sent(self, label: str, since: float = 0.0) -> Optional[Any]:
        """The last value the server sent for the control ``label`` after ``since`` (None if none)."""
        uuid = self.control(label)
        values = [m["updates"]["value"] for m in self.messages(since)
                  if m["type"] == "GuiUpdateMessage" and m["uuid"] == uuid and "value" in m["updates"]]
        return values[-1] if values else None

    def notifications(self, since: float = 0.0) -> list[tuple[str, str]]:
        return [(m["props"]["title"], m["props"]["body"]) for m in self.messages(since)
                if m["type"] in ("NotificationShowMessage", "NotificationUpdateMessage")]

    def wait_for_notification(self, title: str, since: float, timeout: float = 10.0) -> str:
        _, message = self.wait_for(lambda m: m["type"] == "NotificationShowMessage" and m["props"]["title"] == title,
                                   since=since, timeout=timeout)
        return message["props"]["body"]

    # ------------------------------------------------------------------ sending
    def send(self, label: str, value: Any = None, updates: Optional[dict] = None) -> float:
        """Send an update of the control ``label`` (``{"value": value}`` unless ``updates``); returns when it left."""
        message = {"type": "GuiUpdateMessage", "uuid": self.control(label), "updates": {"value": value} if updates is None else updates}
        sent = time.perf_counter()
        self.ws.send(msgspec.msgpack.encode(message))
        return sent

    def click(self, label: str) -> float:
        return self.send(label, True)

    def upload(self, label: str, name: str, content: bytes, mime_type: str = "image/png") -> float:
        """Upload ``content`` as the file ``name`` through the upload button ``label``, in one part, as the page does."""
        uuid, transfer = self.control(label), f"upload-{time.perf_counter_ns()}"
        sent = time.perf_counter()
        self.ws.send(msgspec.msgpack.encode({
            "type": "FileTransferStartUpload", "source_component_uuid": uuid, "transfer_uuid": transfer, "filename": name,
            "mime_type": mime_type, "part_count": 1, "size_bytes": len(content),
        }))
        self.ws.send(msgspec.msgpack.encode({
            "type": "FileTransferPart", "source_component_uuid": uuid, "transfer_uuid": transfer, "part_index": 0, "content": content,
        }))
        return sent


@contextmanager
def open_page(port: int) -> Iterator[ViserClient]:
    """A client connected as a new browser tab, once the page's controls have arrived; closed afterwards."""
    client = ViserClient(port)
    try:
        client.control("Time")  # the page is built
        yield client
    finally:
        client.close()
