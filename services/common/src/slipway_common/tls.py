"""TLS from the certificates `cargo xtask certs` makes, with a clear failure when a file is missing."""

import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPaths:
    """Where a service finds its certificates: `CERTS_DIR` (default /certs) and the Root CA.

    `ROOT_CA` names the Root CA (the images set the copy baked into them at build time).
    """

    service: str
    certs_dir: Path
    root_ca: Path

    @classmethod
    def from_env(cls, service: str) -> "CertPaths":
        certs_dir = Path(os.environ.get("CERTS_DIR") or "/certs")
        root_ca = Path(os.environ.get("ROOT_CA") or certs_dir / "rootCA.crt")
        return cls(service, certs_dir, root_ca)

    @property
    def server_cert(self) -> Path:
        return self.certs_dir / f"{self.service}.crt"

    @property
    def server_key(self) -> Path:
        return self.certs_dir / f"{self.service}.key"

    @property
    def client_cert(self) -> Path:
        return self.certs_dir / f"{self.service}-client.crt"

    @property
    def client_key(self) -> Path:
        return self.certs_dir / f"{self.service}-client.key"


def require_files(service: str, files: dict[str, Path]) -> None:
    """Exit with one line naming the first missing file (fail fast without trust material)."""
    for what, path in files.items():
        if not path.is_file():
            print(
                f"{service}: cannot start: {what} {path} is missing "
                "(run `cargo xtask certs`, and mount the certificates directory)",
                file=sys.stderr,
            )
            raise SystemExit(2)


def client_context(paths: CertPaths) -> ssl.SSLContext:
    """A client context that trusts only the project Root CA and presents the service's client certificate."""
    require_files(
        paths.service,
        {"the Root CA": paths.root_ca, "the client certificate": paths.client_cert, "the client key": paths.client_key},
    )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(paths.root_ca))
    context.load_cert_chain(str(paths.client_cert), str(paths.client_key))
    return context
