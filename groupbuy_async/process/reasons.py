"""One-line reasons: what went wrong and where, for a log line or a startup error, without a
traceback and without credentials."""

from yarl import URL


def reason(exc: BaseException) -> str:
    """The first line of what `exc` says (an OSError's strerror), else its type's name."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]


def server_address(url: str) -> str:
    """host:port of a server URL (a socket's path for unix://), without user or password
    (safe to print)."""
    try:
        parsed = URL(url)
    except ValueError:  # e.g. libpq's multi-host postgresql://u:p@h1:5432,h2:5432/db
        return url.partition("://")[2].split("/", 1)[0].rpartition("@")[2]
    if not parsed.host:  # unix:///run/redis.sock, postgresql:///db?host=/run/postgresql
        return parsed.path if parsed.scheme == "unix" else parsed.query.get("host", "localhost")
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def unreachable(what: str, url: str, exc: BaseException) -> str:
    """One line: which server, where (no credentials), and why."""
    return f"cannot reach {what} at {server_address(url)}: {reason(exc)}"
