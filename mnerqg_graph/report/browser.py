"""A headless Chromium driven over the DevTools protocol, with the standard library only.

The report's browser tests, its screenshot and its load-time benchmark open the page in a real
browser: :class:`HeadlessChromium` starts ``chromium --headless --remote-debugging-port=0`` with
flags that keep it off the network (no sync, no component updates, no QUIC, a throw-away
profile), connects to the page's DevTools WebSocket (a minimal RFC 6455 client: text frames,
fragments, ping) and offers what those callers need: navigate, evaluate JavaScript, collect console
errors, exceptions and network requests, take screenshots.

    with HeadlessChromium() as browser:
        browser.open("file:///tmp/report.html")
        browser.wait_for("document.documentElement.dataset.ready === '1'")
        print(browser.evaluate("document.title"), browser.console_errors())
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mnerqg_graph.errors import MnerqgError
from mnerqg_graph.io import ClosingContext

#: Where Debian's package and other builds put the browser, in order of preference.
CANDIDATES: tuple[str, ...] = (
    "/usr/bin/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)

#: Flags for a browser that must not hang on a machine without network or display.
FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


class BrowserError(MnerqgError):
    """The browser is missing, did not start, or did not answer."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None.

    ``$MNERQG_CHROMIUM`` wins when set; then :data:`CANDIDATES` (absolute paths, then ``PATH``).
    """
    env = os.environ.get("MNERQG_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CANDIDATES:
        if os.sep in name:
            if Path(name).is_file() and os.access(name, os.X_OK):
                return name
        elif found := shutil.which(name):
            return found
    return None


class _WebSocket:
    """A minimal WebSocket client (RFC 6455): masked text frames out, any frames in."""

    def __init__(self, url: str, timeout: float) -> None:
        m = re.fullmatch(r"ws://([^/:]+):(\d+)(/.*)", url)
        if m is None:
            raise BrowserError(f"not a ws:// URL: {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode("ascii"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("the browser closed the DevTools connection")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise BrowserError(f"DevTools refused the WebSocket: {status.splitlines()[0]!r}")
        self.buffer = rest

    def send(self, text: str) -> None:
        payload = text.encode("utf-8")
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + body)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            except TimeoutError:
                raise BrowserError("the browser did not answer in time") from None
            if not chunk:
                raise BrowserError("the browser closed the DevTools connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def pending(self) -> bool:
        """Whether a frame may be read without blocking."""
        return bool(self.buffer) or bool(select.select([self.sock], [], [], 0)[0])

    def receive(self) -> str:
        """The next text message (control frames are handled on the way)."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise BrowserError("the browser closed the DevTools connection")
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80) + b"\0\0\0\0")
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        try:
            self.sock.sendall(struct.pack("!BB", 0x88, 0x80) + b"\0\0\0\0")
        except OSError:
            pass
        self.sock.close()


class HeadlessChromium(ClosingContext):
    """A headless Chromium with one page, driven over the DevTools protocol.

    Args:
        executable: the browser (default :func:`find_chromium`).
        width: viewport width in CSS pixels.
        height: viewport height in CSS pixels.
        timeout: seconds to wait for the browser to start and for each command.

    Raises:
        BrowserError: no browser found, or it did not start.
    """

    def __init__(
        self,
        executable: str | None = None,
        width: int = 1400,
        height: int = 900,
        timeout: float = 60.0,
    ) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no Chromium found (apt-get install chromium, or $MNERQG_CHROMIUM)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="mnerqg-chromium-")
        args = [
            exe,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # stderr to a file: nobody reads a pipe once the port is known, and a full pipe blocks
        self.log = Path(self.profile) / "stderr.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        try:
            port = self._devtools_port()
            page = self._page_target(port)
            self.ws = _WebSocket(page, timeout)
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        """Read ``DevTools listening on ws://HOST:PORT/...`` from the browser's stderr."""
        deadline = time.monotonic() + self.timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.log.read_text("utf-8", "replace")
            m = re.search(r"DevTools listening on ws://[^:/]+:(\d+)/", text)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = " | ".join(x.strip() for x in text.splitlines()[-3:] if x.strip())
        raise BrowserError(f"Chromium did not start its DevTools server ({tail or 'no output'})")

    def _page_target(self, port: int) -> str:
        """The WebSocket URL of the browser's page."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.loads(r.read().decode("utf-8"))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise BrowserError("Chromium opened no page")

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result (events met meanwhile are kept).

        Raises:
            BrowserError: the command failed or timed out.
        """
        self._next_id += 1
        call_id = self._next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.receive())
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message', msg['error'])}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)
        raise BrowserError(f"{method}: no answer within {self.timeout:.0f} s")

    def drain(self) -> None:
        """Read the events that have arrived so far."""
        while self.ws.pending():
            msg = json.loads(self.ws.receive())
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited).

        Raises:
            BrowserError: the expression threw.
        """
        got = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in got:
            detail = got["exceptionDetails"]
            text = detail.get("exception", {}).get("description") or detail.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return got.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, poll: float = 0.02) -> Any:
        """Evaluate ``expression`` until it is truthy; its value.

        Raises:
            BrowserError: still falsy after ``timeout`` seconds (default: the browser's).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            time.sleep(poll)

    def open(self, url: str) -> None:
        """Navigate the page to ``url`` and wait for its load event.

        A URL that differs from the page's only in its fragment is a same-document navigation
        (the page gets a ``hashchange``, no load event): then this returns at once.
        """
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        result = self.send("Page.navigate", url=url)
        if "errorText" in result:
            raise BrowserError(f"{url}: {result['errorText']}")
        if "loaderId" not in result:
            return
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading")
            msg = json.loads(self.ws.receive())
            if "method" in msg:
                self.events.append(msg)

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        self.drain()
        out: list[str] = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(str(d.get("exception", {}).get("description") or d.get("text")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(str(p["entry"].get("text")))
        return out

    def requests(self) -> list[str]:
        """The URLs the page requested so far (``data:`` URLs included)."""
        self.drain()
        return [
            str(e["params"]["request"]["url"])
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the browser and remove its profile."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def page_state(browser: HeadlessChromium) -> dict[str, Any]:
    """The report page's ``<pre id="test-state">`` as a dict."""
    text = browser.evaluate("document.getElementById('test-state').textContent")
    return dict(json.loads(text or "{}"))
