"""Open a page in real headless Chromium through the DevTools protocol (over a pipe: no port, no network).

``render(path)`` loads a local HTML file and returns the console errors, the state of every image and a
PNG screenshot of the whole page. Used to check the HTML report as a reader's browser shows it.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Pipe:
    """The DevTools protocol: JSON messages ended by NUL; commands on the child's fd 3, answers on its fd 4."""

    def __init__(self, to_browser: int, from_browser: int, timeout: float):
        self.to_browser, self.from_browser = to_browser, from_browser
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message()
            self.events.append(event)
            if event.get("method") == method:
                return event


def render(chromium: str, page: Path, width: int = 1280, height: int = 1600, timeout: float = 90) -> dict:
    """``{"errors": [...], "images": [{"src", "complete", "width"}], "screenshot": png_bytes}`` of a local page."""
    commands_r, commands_w = os.pipe()
    replies_r, replies_w = os.pipe()

    def as_fds_3_and_4():
        os.dup2(commands_r, 3)
        os.dup2(replies_w, 4)

    with tempfile.TemporaryDirectory(prefix="nntransfer-chromium-") as profile:
        proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4),
                                preexec_fn=as_fds_3_and_4)
        os.close(commands_r)
        os.close(replies_w)
        pipe = _Pipe(commands_w, replies_r, timeout)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            pipe.call("Page.navigate", session, url=page.resolve().as_uri())
            pipe.wait_for("Page.loadEventFired")
            images = pipe.call("Runtime.evaluate", session, returnByValue=True, expression=(
                "Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
                "width: i.naturalWidth}))"))["result"]["value"]
            shot = pipe.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
            errors = []
            for event in pipe.events:
                params = event.get("params", {})
                if event.get("method") == "Runtime.exceptionThrown":
                    errors.append(params["exceptionDetails"].get("text", "exception"))
                elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
                    errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
                elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                    errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
            try:
                pipe.call("Browser.close")
            except RuntimeError:
                pass  # the pipe closes as the browser goes
            return {"errors": errors, "images": images, "screenshot": base64.b64decode(shot["data"])}
        finally:
            os.close(commands_w)
            os.close(replies_r)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
