"""Secure mode for multi-node runs: Ray token authentication and TLS on Ray's gRPC.

Ray reads both settings from the environment of every Ray process, nodes and drivers alike:

- ``RAY_AUTH_MODE=token`` with the token in ``RAY_AUTH_TOKEN``, or in the file named by
  ``RAY_AUTH_TOKEN_PATH``, or in ``~/.ray/auth_token``: every gRPC call and every dashboard request
  (job submission) must carry it;
- ``RAY_USE_TLS=1`` with ``RAY_TLS_SERVER_CERT``, ``RAY_TLS_SERVER_KEY`` and ``RAY_TLS_CA_CERT``:
  mutual TLS on every gRPC channel. Each process presents its certificate as server and as client,
  and a peer is accepted only when its certificate chains to the CA and names the address it was
  dialled at (Ray dials nodes by IP, so a node's certificate lists its IPs).

This module writes a *secrets directory* that holds all of it, for tests, the shaped-link script and
small clusters (``splitstream certs DIR``)::

    DIR/ca.crt  DIR/ca.key           the CA (a throwaway one, or a copy of the user's certificate)
    DIR/NODE.crt  DIR/NODE.key       a node certificate per ``--node NODE=IP,...``
    DIR/NODE.env                     ``export`` lines for that node (source it before ``ray start``)
    DIR/token                        the cluster's token (kept when it already exists)

Keys and the token are written owner-only (0600). Nothing here opens a network connection.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TOKEN = "token"
DEFAULT_DAYS = 365
LOCAL_NAMES = ("localhost", "127.0.0.1")  # processes of one node also reach each other here

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
TLS_VARS = ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class SecurityError(ValueError):
    """A secure-mode setting that cannot work (a missing or unreadable file, a bad node spec)."""


# ---------------------------------------------------------------------- certificates
@dataclass(frozen=True)
class NodeSpec:
    """One node certificate to issue: a file name and the addresses it must be valid for."""

    name: str
    sans: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> NodeSpec:
        """``NAME`` or ``NAME=SAN,SAN,...`` (IP addresses or DNS names; localhost is always added)."""
        name, _, rest = spec.partition("=")
        name = name.strip()
        if not _NODE_NAME.match(name) or name in ("ca", TOKEN):
            raise SecurityError(
                f"bad node name {name!r} in {spec!r}: letters, digits, '.', '_' and '-' only "
                "(and not 'ca' or 'token')"
            )
        sans = [s for s in (part.strip() for part in re.split(r"[,\s]+", rest)) if s]
        for san in sans:
            if not _is_ip(san) and not re.match(r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$", san):
                raise SecurityError(f"bad address {san!r} for node {name!r}: not an IP or DNS name")
        return cls(name, tuple(dict.fromkeys([*sans, *LOCAL_NAMES])))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "splitstream"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def make_ca(days: int = DEFAULT_DAYS, common_name: str = "splitstream throwaway CA"):
    """A new self-signed CA: ``(private_key, certificate)`` (ECDSA P-256, SHA-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_node_cert(ca_key, ca_cert, node: NodeSpec, days: int = DEFAULT_DAYS):
    """A node certificate signed by the CA, for TLS server and client use: ``(key, cert)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _new_key()
    now = _now()
    names = [
        x509.IPAddress(ipaddress.ip_address(s)) if _is_ip(s) else x509.DNSName(s)
        for s in node.sans
    ]
    not_after = min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node.name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (created 0600, never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def load_ca(cert_path: Path, key_path: Path):
    """The CA's ``(key, cert)`` from PEM files, with a clear error when they do not fit."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(_read(cert_path, "CA certificate"))
    except ValueError as exc:
        raise SecurityError(f"{cert_path} is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, "CA key"), password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(
            f"{key_path} is not an unencrypted PEM private key: {exc}"
        ) from None
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise SecurityError(f"the CA key {key_path} does not belong to {cert_path}")
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise SecurityError(f"{cert_path} is not a CA certificate (basicConstraints CA:FALSE)")
    return key, cert


def write_secrets(
    directory: str | os.PathLike[str],
    nodes: Sequence[NodeSpec],
    *,
    ca_cert: str | os.PathLike[str] | None = None,
    ca_key: str | os.PathLike[str] | None = None,
    days: int = DEFAULT_DAYS,
    token: bool = True,
) -> dict[str, object]:
    """Fill a secrets directory (see the module docstring); returns what it wrote.

    The CA is, in order: ``ca_cert`` + ``ca_key`` (the user's CA: its certificate is copied in, its
    key is not), the CA already in ``directory``, or a new throwaway CA. Node certificates and their
    env files are (re)written; an existing token is kept, so adding a node never changes it.
    """
    if days < 1:
        raise SecurityError(f"days must be >= 1, got {days}")
    if (ca_cert is None) != (ca_key is None):
        raise SecurityError("give both --ca-cert and --ca-key (your CA), or neither")
    out = Path(directory).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
    except OSError as exc:
        raise SecurityError(f"cannot create {out}: {exc.strerror or exc}") from None
    written: list[str] = []
    if ca_cert is not None:
        key, cert = load_ca(Path(ca_cert).expanduser(), Path(ca_key).expanduser())
        ca_source = "given"
        (out / CA_CERT).write_bytes(_pem_cert(cert))
        written.append(CA_CERT)
    elif (out / CA_CERT).exists() and (out / CA_KEY).exists():
        key, cert = load_ca(out / CA_CERT, out / CA_KEY)
        ca_source = "existing"
    elif (out / CA_CERT).exists():
        raise SecurityError(
            f"{out / CA_CERT} exists without its key {CA_KEY}: give --ca-cert and --ca-key to "
            "issue node certificates from it, or use an empty directory for a new CA"
        )
    else:
        key, cert = make_ca(days)
        ca_source = "new"
        (out / CA_CERT).write_bytes(_pem_cert(cert))
        _write_private(out / CA_KEY, _pem_key(key))
        written += [CA_CERT, CA_KEY]
    token_path = out / TOKEN
    if token and not token_path.exists():
        _write_private(token_path, new_token().encode())
        written.append(TOKEN)
    for node in nodes:
        node_key, node_cert = issue_node_cert(key, cert, node, days)
        (out / f"{node.name}.crt").write_bytes(_pem_cert(node_cert))
        _write_private(out / f"{node.name}.key", _pem_key(node_key))
        env = node_env(out, node.name, token=token_path.exists())
        (out / f"{node.name}.env").write_text(env_lines(env))
        written += [f"{node.name}.crt", f"{node.name}.key", f"{node.name}.env"]
    return {"directory": str(out), "ca": ca_source, "written": written}


# ---------------------------------------------------------------------- tokens and environments
def new_token() -> str:
    """A fresh random token (256 bits, hex)."""
    return secrets.token_hex(32)


def read_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (surrounding whitespace dropped); a clear error when missing or empty."""
    text = _read(Path(path).expanduser(), "token file").decode(errors="replace").strip()
    if not text:
        raise SecurityError(f"the token file {path} is empty")
    return text


def node_env(
    directory: str | os.PathLike[str], node: str | None, token: bool = True
) -> dict[str, str]:
    """Ray's secure-mode variables for one node of a secrets directory (absolute paths).

    ``node=None`` gives token authentication only; ``token=False`` gives TLS only.
    """
    d = Path(directory).expanduser().resolve()
    env: dict[str, str] = {}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(d / TOKEN))
    if node is not None:
        env.update(
            RAY_USE_TLS="1",
            RAY_TLS_SERVER_CERT=str(d / f"{node}.crt"),
            RAY_TLS_SERVER_KEY=str(d / f"{node}.key"),
            RAY_TLS_CA_CERT=str(d / CA_CERT),
        )
    return env


def env_lines(env: Mapping[str, str]) -> str:
    """``export`` lines for a POSIX shell."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def tls_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def token_auth_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("RAY_AUTH_MODE", "").lower() == "token"


def check_environment(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Problems with the secure-mode variables a Ray process would start with (empty when none).

    Catches what Ray itself reports late or obscurely: a token path that does not exist, TLS on
    with a missing file, a certificate that does not match its key or does not chain to the CA.
    """
    problems: list[str] = []
    if token_auth_enabled(environ) and not environ.get("RAY_AUTH_TOKEN"):
        path = environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        try:
            read_token(path)
        except SecurityError as exc:
            problems.append(f"RAY_AUTH_MODE=token: {exc}")
    if tls_enabled(environ):
        missing = [v for v in TLS_VARS[1:] if not environ.get(v)]
        if missing:
            problems.append(f"RAY_USE_TLS=1 needs {', '.join(missing)} too")
        else:
            try:
                check_node_cert(
                    environ["RAY_TLS_SERVER_CERT"],
                    environ["RAY_TLS_SERVER_KEY"],
                    environ["RAY_TLS_CA_CERT"],
                )
            except SecurityError as exc:
                problems.append(f"RAY_USE_TLS=1: {exc}")
    return problems


def check_node_cert(cert_path: str, key_path: str, ca_path: str) -> None:
    """Raise :class:`SecurityError` unless the key fits the certificate and the CA signed it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(_read(Path(cert_path), "TLS certificate"))
        cas = x509.load_pem_x509_certificates(_read(Path(ca_path), "CA certificate"))
    except ValueError as exc:
        raise SecurityError(f"not a PEM certificate ({cert_path} or {ca_path}): {exc}") from None
    try:
        key = serialization.load_pem_private_key(_read(Path(key_path), "TLS key"), password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"{key_path} is not an unencrypted PEM private key: {exc}") from None
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise SecurityError(f"the key {key_path} does not belong to the certificate {cert_path}")
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if cert.not_valid_after_utc < _now():
            raise SecurityError(f"the certificate {cert_path} expired on {cert.not_valid_after_utc}")
        return
    raise SecurityError(f"the certificate {cert_path} was not issued by the CA in {ca_path}")


def use_token_file(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> None:
    """Make this process (and the Ray processes it starts) authenticate with the token in ``path``:
    ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``; an inherited ``RAY_AUTH_TOKEN`` would take
    precedence in Ray, so it is removed. Call before Ray is imported."""
    env = os.environ if environ is None else environ
    resolved = Path(path).expanduser().resolve()
    read_token(resolved)
    env.pop("RAY_AUTH_TOKEN", None)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN_PATH"] = str(resolved)
