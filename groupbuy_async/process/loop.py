"""The event loop a process runs: uvloop's when installed (GROUPBUY_API_EVENT_LOOP=auto), or
asyncio's."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .startup import StartupError

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for "uvloop", and for "auto" when it is installed; None: asyncio's."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError(
                "GROUPBUY_API_EVENT_LOOP is uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_with_loop(main: Coroutine[Any, Any, T], choice: str) -> T:
    """asyncio.run(main) on the event loop `choice` names (see loop_factory)."""
    try:
        factory = loop_factory(choice)
    except StartupError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name() -> str:
    """The running event loop, for the log: "uvloop 0.23.0" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    if module.startswith("uvloop"):
        from importlib.metadata import version

        return f"uvloop {version('uvloop')}"
    return "asyncio"
