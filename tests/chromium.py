"""Headless Chromium for the HTML checks: one page, loaded over the DevTools protocol.

Used by the report's and the diff's browser tests.  :func:`open_page` starts Chromium with
a throw-away profile, loads a local file, and yields the DevTools client with every
console or script error the page raised; :func:`screenshot` and :func:`pixel_at` read the
rendered colours back from a PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import ROOT, need

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--remote-allow-origins=*",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cdp:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def drain(self, seconds: float) -> None:
        self.ws.settimeout(seconds)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except Exception:
            pass
        self.ws.settimeout(30)


def _png_pixel(png: bytes, x: int, y: int) -> tuple[int, int, int]:
    """RGB of one pixel of a non-interlaced 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    color_type = 6
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _h, depth, color_type, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color_type in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if color_type == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
    i = x * bpp
    return prev[i], prev[i + 1], prev[i + 2]


def _page_target(port: int) -> dict[str, Any]:
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if targets:
                return targets[0]
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("Chromium did not expose a page over the DevTools protocol")


def _is_error(event: dict[str, Any]) -> bool:
    method, params = event.get("method"), event.get("params", {})
    return (
        method == "Runtime.exceptionThrown"
        or (method == "Runtime.consoleAPICalled" and params["type"] == "error")
        or (method == "Log.entryAdded" and params["entry"]["level"] == "error")
    )


@contextmanager
def open_page(page: Path) -> Iterator[tuple[Cdp, list[dict[str, Any]]]]:
    """Chromium showing ``page`` (1280x1400): the DevTools client and the page's errors."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "headless Chromium not installed (apt-get install chromium)")
    assert chromium is not None
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--remote-debugging-port={port}", "--window-size=1280,1400", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        cdp = Cdp(_page_target(port)["webSocketDebuggerUrl"])
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=page.as_uri())
        cdp.drain(2.0)
        yield cdp, [e for e in cdp.events if _is_error(e)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(cdp: Cdp, name: str) -> bytes:
    """The page as PNG, also kept in out/screenshots (or $ENCLAVE_AUDIT_SCREENSHOTS)."""
    png = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
    out_dir = Path(os.environ.get("ENCLAVE_AUDIT_SCREENSHOTS", ROOT / "out" / "screenshots"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_bytes(png)
    return png


def pixel_at(cdp: Cdp, png: bytes, x: float, y: float) -> tuple[int, int, int]:
    """RGB of the screenshot at CSS pixel (x, y), scaled by the device pixel ratio."""
    dpr = cdp.call("Runtime.evaluate", expression="devicePixelRatio", returnByValue=True)
    scale = float(dpr["result"]["value"])
    return _png_pixel(png, int(x * scale), int(y * scale))
