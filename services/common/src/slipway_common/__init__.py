"""What Slipway's Python services share: one-line logs and TLS from the project certificates."""

from slipway_common.log import configure_logging, log_event
from slipway_common.tls import CertPaths, client_context, require_files

__all__ = ["CertPaths", "client_context", "configure_logging", "log_event", "require_files"]
