"""`python -m agent.healthcheck`: the image's HEALTHCHECK. GET /health over mTLS, exit 0 on 200."""

import http.client
import os
import sys

from slipway_common import CertPaths, client_context


def main() -> int:
    port = int(os.environ.get("AGENT_LISTEN", "0.0.0.0:9443").rpartition(":")[2])
    context = client_context(CertPaths.from_env("agent"))
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=3)
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
    except OSError as err:
        print(f"agent healthcheck: {err}", file=sys.stderr)
        return 1
    print(body)
    return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
