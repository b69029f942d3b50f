"""Can this process join the Ray cluster at an address? A quick check before ``ray.init``.

Against a cluster in secure mode (README, "Security"), a driver that lacks the token or the TLS
settings does not get a clear answer from Ray: without the token ``ray.init`` retries for about
20 s and ends in a chained traceback; with TLS on one side only it retries for minutes. This check
takes a few seconds at most and names the cause, in order:

1. the local secure-mode settings themselves (:func:`splitstream.security.check_environment`);
2. the GCS port accepts TCP connections;
3. the GCS port speaks TLS exactly when ``RAY_USE_TLS`` is on here (one TLS ClientHello; the
   first bytes of the answer tell a TLS server from a plain gRPC one);
4. the GCS answers one harmless call (``GetClusterId``) made with this process's token and
   certificate, through Ray's own channel helper: a missing or wrong token, or a certificate the
   cluster does not trust, is refused here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Mapping

from splitstream.security import check_environment, tls_enabled, token_auth_enabled

PROBE_TIMEOUT_S = 5.0
_TOKEN_HELP = (
    "give the cluster's token with --token-file PATH, or set RAY_AUTH_MODE=token and "
    "RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN)"
)
_TLS_HELP = (
    "set RAY_USE_TLS=1, RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY and RAY_TLS_CA_CERT (a certificate "
    "for this machine's address, signed by the cluster's CA), e.g. by sourcing NODE.env from "
    "`splitstream certs`"
)


class ClusterAccessError(ConnectionError):
    """This process cannot join the cluster; the message says why and what to set."""


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` GCS address; None for ``auto``, ``local``, ``ray://...``
    and other forms Ray resolves itself."""
    if not address or "://" in address or address in ("auto", "local"):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def speaks_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the server at ``host:port`` answers a TLS ClientHello with a TLS record.

    A TLS server answers with a handshake (0x16) or alert (0x15) record, version 3.x; a plain
    gRPC server answers with an HTTP/2 frame or closes the connection.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only the record type is looked at, nothing is trusted
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server: the hello is out
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(hello)
        head = b""
        try:
            while len(head) < 2:
                chunk = sock.recv(2 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:  # reset or timed out: not a TLS answer
            pass
    return len(head) == 2 and head[0] in (0x15, 0x16) and head[1] == 0x03


def probe_cluster(
    address: str, environ: Mapping[str, str] = os.environ, timeout: float = PROBE_TIMEOUT_S
) -> None:
    """Raise :class:`ClusterAccessError` when this process clearly cannot join ``address``.

    ``environ`` is the environment Ray will read (this process's own, normally). Addresses Ray
    resolves itself (``auto``, ``ray://...``) only get the local settings checked.
    """
    problems = check_environment(environ)
    if problems:
        raise ClusterAccessError("; ".join(problems))
    hostport = split_address(address)
    if hostport is None:
        return
    host, port = hostport
    try:
        server_tls = speaks_tls(host, port, timeout)
    except OSError as exc:
        raise ClusterAccessError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (is the head "
            "running, and is its GCS port open to this machine?)"
        ) from None
    local_tls = tls_enabled(environ)
    if server_tls and not local_tls:
        raise ClusterAccessError(
            f"the Ray cluster at {address} requires TLS and this process has no TLS settings: "
            + _TLS_HELP
        )
    if local_tls and not server_tls:
        raise ClusterAccessError(
            f"the Ray cluster at {address} does not use TLS, but RAY_USE_TLS is on here: unset "
            "RAY_USE_TLS (or start the cluster in secure mode)"
        )
    _check_call(address, environ, timeout)


def _check_call(address: str, environ: Mapping[str, str], timeout: float) -> None:
    """One ``GetClusterId`` call with this process's token and certificate."""
    try:
        import grpc
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # another Ray layout: leave the verdict to ray.init
        return
    channel = init_grpc_channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        if code == grpc.StatusCode.UNAUTHENTICATED:
            if token_auth_enabled(environ):
                raise ClusterAccessError(
                    f"the Ray cluster at {address} refused this process's token: it is not the "
                    "cluster's token (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)"
                ) from None
            raise ClusterAccessError(
                f"the Ray cluster at {address} requires token authentication: " + _TOKEN_HELP
            ) from None
        if code == grpc.StatusCode.UNAVAILABLE and tls_enabled(environ):
            raise ClusterAccessError(
                f"the TLS handshake with the Ray cluster at {address} failed ({details.strip()}): "
                "the cluster must trust this certificate's CA (RAY_TLS_CA_CERT), and the "
                "certificate of each side must name the address it is reached at"
            ) from None
        # anything else (a GCS still starting, an old Ray): ray.init decides
    finally:
        channel.close()
