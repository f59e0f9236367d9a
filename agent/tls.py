"""Which HTTPS servers edgebench's clients trust: the collector's API for `push`, `devices`, `jobs` and
`gate --server` (``--server-ca``), and its model downloads for the agent (``--tls-ca``, the broker's CA). A CA file
given, else the system's store; the server's name is always checked. Standard library only."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Optional

from edgebench.agent.errors import UsageError
from edgebench.agent.modelfile import file_problem

NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


@functools.lru_cache(maxsize=8)  # one context per CA file and process: loading a store costs milliseconds
def client_context(ca_file: Optional[str] = None, flag: str = "--tls-ca") -> ssl.SSLContext:
    """Verifies a server's certificate and name against ``ca_file`` (a private CA, PEM), else the system's store.
    A CA file that cannot be read or holds no certificate is a UsageError naming ``flag``."""
    problem = file_problem(Path(ca_file)) if ca_file else None  # a FIFO would block the read forever
    if problem:
        raise UsageError(f"{flag} {ca_file} {problem}")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):  # a subclass of OSError, without a strerror
            raise UsageError(f"{flag} {ca_file}: not a PEM CA certificate ({exc.reason or exc})") from None
        raise UsageError(f"{flag} {ca_file}: {exc.strerror}") from None


def unverified(reason: object, flag: str) -> Optional[str]:
    """The one line for a server whose certificate does not verify (``reason``: what urllib's URLError carries),
    naming how to give its CA (``flag``: ``--server-ca``, or ``$SSL_CERT_FILE`` where no flag exists); None when
    ``reason`` is another failure."""
    if not isinstance(reason, ssl.SSLCertVerificationError):
        return None
    why = reason.verify_message or reason.reason or "unknown reason"
    if reason.verify_code in NAME_MISMATCH:
        return f"its TLS certificate is not for this name ({why}): use a name or address the certificate holds"
    return f"its TLS certificate is not trusted ({why}): give the CA that signed it with {flag}"
