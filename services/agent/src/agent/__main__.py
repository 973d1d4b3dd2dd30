"""`python -m agent`: serve the agent over HTTPS, requiring client certificates signed by the Root CA.

Environment: AGENT_LISTEN (0.0.0.0:9443), CERTS_DIR (/certs), ROOT_CA, AGENT_RELOAD=1 (reload on
source changes, in the local image), DEBUGPY_PORT (debugpy listens there, in the local image),
LOG_LEVEL (info).
"""

import os
import ssl
from pathlib import Path

import uvicorn
from slipway_common import CertPaths, configure_logging, log_event, require_files


def main() -> None:
    level = os.environ.get("LOG_LEVEL", "info")
    configure_logging("agent", level)
    paths = CertPaths.from_env("agent")
    require_files(
        "agent",
        {"the Root CA": paths.root_ca, "the server certificate": paths.server_cert, "the server key": paths.server_key},
    )
    host, _, port = os.environ.get("AGENT_LISTEN", "0.0.0.0:9443").rpartition(":")
    debug_port = os.environ.get("DEBUGPY_PORT")
    if debug_port:
        import debugpy

        debugpy.listen(("0.0.0.0", int(debug_port)))
        log_event("debugpy-listening", port=debug_port)
    reload = os.environ.get("AGENT_RELOAD") == "1"
    log_event("starting", addr=f"{host}:{port}", reload=reload)
    uvicorn.run(
        "agent.app:app",
        host=host,
        port=int(port),
        ssl_certfile=str(paths.server_cert),
        ssl_keyfile=str(paths.server_key),
        ssl_ca_certs=str(paths.root_ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        reload=reload,
        reload_dirs=[str(Path(__file__).parent)] if reload else None,
        log_config=None,
        log_level=level,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
