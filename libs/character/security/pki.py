"""TLS material: folders in the cert-manager Secret layout, and the throwaway local CA.

A TLS folder holds `tls.crt` (the certificate, PEM), `tls.key` (its private key) and `ca.crt`
(the CA that signs every platform certificate). Servers present tls.crt; workers require
clients to present a certificate ca.crt signed (mutual TLS). In Kubernetes the folder is a
Secret (cert-manager can issue it); on a laptop `oct up` makes one with `ensure_local_pki`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from character.errors import InvalidInput
from character.home import oct_home

TLS_DIR_ENV = "OCT_TLS_DIR"
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")
LOCAL_NAME = "oct-local"
"""The certificate name of the services `oct up` starts (also their client identity)."""
LOCAL_DAYS = 825


@dataclass(frozen=True)
class TlsMaterial:
    """The three PEM files of a TLS folder."""

    cert: bytes
    key: bytes
    ca: bytes
    folder: Path

    @classmethod
    def load(cls, folder: str | Path) -> TlsMaterial:
        folder = Path(folder).expanduser()
        missing = [name for name in TLS_FILES if not (folder / name).is_file()]
        if missing:
            raise InvalidInput(f"TLS folder lacks {', '.join(missing)} (the cert-manager layout: "
                               f"{', '.join(TLS_FILES)})", where=str(folder))
        cert, key, ca = (folder.joinpath(name).read_bytes() for name in TLS_FILES)
        return cls(cert=cert, key=key, ca=ca, folder=folder)


def local_tls_root(home: Path | None = None) -> Path:
    return (home or oct_home()) / "tls"


def find_tls_dir(explicit: str | Path | None = None) -> Path | None:
    """The TLS folder to use: `explicit` (a --tls-dir flag), $OCT_TLS_DIR, or the local one
    `oct up` made under $OCT_HOME; None when there is none."""
    chosen = explicit or os.environ.get(TLS_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    local = local_tls_root() / LOCAL_NAME
    return local if all((local / name).is_file() for name in TLS_FILES) else None


def ensure_local_pki(home: Path | None = None) -> Path:
    """The local TLS folder for `oct up` ($OCT_HOME/tls/oct-local), made on first use with a
    fresh CA whose key stays in $OCT_HOME/tls/ca.key. Its certificate names localhost, the
    loopback addresses and this host's name."""
    root = local_tls_root(home)
    folder = root / LOCAL_NAME
    if all((folder / name).is_file() for name in TLS_FILES):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=0o700)
    try:
        ca_cert, ca_key = new_ca("oct local CA")
        write_pem(tmp / "ca.key", key_pem(ca_key), private=True)
        write_pem(tmp / "ca.crt", cert_pem(ca_cert))
        issue(tmp, LOCAL_NAME, ["localhost", socket.gethostname(), "127.0.0.1", "::1"], tmp / LOCAL_NAME)
        try:
            os.replace(tmp / "ca.key", root / "ca.key")
            os.replace(tmp / "ca.crt", root / "ca.crt")
            (tmp / LOCAL_NAME).rename(folder)
        except OSError:
            if not all((folder / name).is_file() for name in TLS_FILES):  # not a concurrent `oct up` that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def new_ca(name: str, days: int = LOCAL_DAYS) -> tuple[object, object]:
    """A self-signed CA certificate and its key (EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca_folder: Path, name: str, hosts: Sequence[str], out: Path, days: int = LOCAL_DAYS) -> Path:
    """Write a TLS folder `out` for `name` (common name and first DNS name), valid for `hosts`
    (DNS names or IP addresses) as server and as client, signed by the CA in `ca_folder`
    (ca.crt + ca.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate((ca_folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_folder / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_pem(out / "tls.key", key_pem(key), private=True)
    write_pem(out / "tls.crt", cert_pem(cert))
    write_pem(out / "ca.crt", (ca_folder / "ca.crt").read_bytes())
    return out


def key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined, no-any-return]


def write_pem(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
