"""One line per event, on stdout: `<service>: event=<name> key=value ...`."""

import logging
import sys

_service = "service"


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stdout, one line each, prefixed with the service name."""
    global _service
    _service = service
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"{service}: level=%(levelname)s logger=%(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_event(event: str, **fields: object) -> None:
    """Print one event as one line."""
    parts = [f"{_service}: event={event}"]
    parts += [f"{key}={value}" for key, value in fields.items()]
    print(" ".join(parts), flush=True)
