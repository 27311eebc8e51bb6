"""SIGINT and SIGTERM: what a process does when asked to stop."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

log = logging.getLogger("groupbuy_async")

Stop = Callable[[], Awaitable[None]]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` on SIGINT or SIGTERM while inside (the running loop's handlers)."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def run_until_signalled(start: Callable[[], Awaitable[Stop]]) -> None:
    """Start something, wait for SIGINT/SIGTERM, then run the stop it returned."""
    stop_event = asyncio.Event()
    with on_stop_signals(stop_event.set):
        stop = await start()
        try:
            await stop_event.wait()
        finally:
            log.info("stopping")
            await stop()
