"""Stopping a process a test started: by its PID only, politely first."""

from __future__ import annotations

import signal
import subprocess

#: Seconds a process gets to exit after its signal before it is killed.
GRACE_S = 10.0


def stop_process(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace_s: float = GRACE_S
) -> int | None:
    """Send `sig` to `proc` (SIGKILL to simulate a crash), SIGKILL it after `grace_s`, reap it; its exit
    status, or None when there was no process."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
