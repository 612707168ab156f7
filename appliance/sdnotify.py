"""systemd's notify protocol in a few lines: READY/STOPPING/STATUS and the watchdog keepalive."""

from __future__ import annotations

import asyncio
import os
import socket


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds when the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def watchdog_loop() -> None:
    """Send ``WATCHDOG=1`` from the event loop, so a stalled loop stops the keepalives."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)
