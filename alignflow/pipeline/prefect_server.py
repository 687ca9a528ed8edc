"""Prefect's temporary API server, started by alignflow at the first moment of a command.

With no `PREFECT_API_URL`, Prefect starts a temporary server of its own on the first flow call:
it imports the server package in the calling process (~7 s), then starts it in a subprocess and
waits for it (~6 s more), after alignflow's own imports (~8 s). Starting the same server (same
app, same database under PREFECT_HOME, the same settings Prefect passes it) before those imports
lets it boot while they run, and spares the calling process the server import: a fully cached run
is mostly this start-up. Worker processes of a parallel run inherit `PREFECT_API_URL` and share it.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """A Prefect API server process on 127.0.0.1 that lives as long as one alignflow command."""

    def __init__(self) -> None:
        port = str(free_port())
        self.api_url = f"http://127.0.0.1:{port}/api"
        # What Prefect's own SubprocessASGIServer passes: no UI, ephemeral-mode services.
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", port, "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL)

    def wait_until_ready(self, timeout: float) -> None:
        """Block until the server answers its health check; raise if it died or never answered."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prefect's temporary server exited with code {self.process.returncode}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Prefect's temporary server did not answer on {self.api_url} within {timeout:.0f}s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_started: TemporaryServer | None = None


def start_prefect_api() -> TemporaryServer | None:
    """Make sure `PREFECT_API_URL` points at a Prefect API before Prefect is imported: the user's own
    (a running `prefect server start`) if set, else a temporary server started now, once per
    process, and stopped when the process exits (as Prefect's own temporary server is). Returns the
    server to `wait_until_ready` on before the first flow runs; None when there is nothing to wait
    for (the user's server, or Prefect already imported and so already settled on its own)."""
    global _started
    if _started is not None:
        return _started
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    _started = TemporaryServer()
    os.environ["PREFECT_API_URL"] = _started.api_url
    atexit.register(_started.stop)
    return _started
