"""The devcluster's PKI and kubeconfigs: one CA, a serving certificate, one client certificate per
identity, and the service-account signing key.

Every component gets its own user name, so the API server's audit log tells them apart and RBAC
decides what the operator may do exactly as it would in a real cluster.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
CLUSTER_NAME = "modelplane-dev"
VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """A client identity: the certificate's CN is the user name, each O a group."""

    file: str  # base name of the .crt/.key pair and of the kubeconfig
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Identity("admin", "kubernetes-admin", ("system:masters",))
OPERATOR = Identity("operator", "modelplane-operator")
CONTROLLER_MANAGER = Identity(
    "kube-controller-manager", "system:kube-controller-manager", ("system:masters",)
)
SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler")
KWOK = Identity("kwok", "system:kwok-controller", ("system:masters",))
IDENTITIES = (ADMIN, OPERATOR, CONTROLLER_MANAGER, SCHEDULER, KWOK)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def cert(self, identity: Identity) -> Path:
        return self.dir / f"{identity.file}.crt"

    def key(self, identity: Identity) -> Path:
        return self.dir / f"{identity.file}.key"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.CertificateBuilder:
    """What every certificate here shares: a year's validity (from five minutes ago, for clock
    skew), basic constraints, and key usage (signing certificates only for the CA)."""
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    builder = _builder(subject, ca_cert.subject, key, ca=False).add_extension(
        x509.ExtendedKeyUsage(usages), critical=False
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def generate(dir: Path) -> Pki:
    """Create the CA, the serving certificate, every identity's client certificate and the SA key."""
    dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(dir)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CLUSTER_NAME}-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.ca_key, _pem_key(ca_key), private=True)

    serving_key = _key()
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", KUBERNETES_SERVICE_IP)]
    serving = _issue(
        ca_cert, ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        serving_key, [ExtendedKeyUsageOID.SERVER_AUTH], sans,
    )  # fmt: skip
    _write(pki.serving_cert, serving.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_key, _pem_key(serving_key), private=True)

    for identity in IDENTITIES:
        key = _key()
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in identity.groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.user))
        cert = _issue(ca_cert, ca_key, x509.Name(attributes), key, [ExtendedKeyUsageOID.CLIENT_AUTH])
        _write(pki.cert(identity), cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.key(identity), _pem_key(key), private=True)

    sa_key = _key()
    _write(pki.sa_key, _pem_key(sa_key), private=True)
    _write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca_data: str, user: str, credentials: dict[str, str]) -> dict[str, Any]:
    """A one-context kubeconfig (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": f"{user}@{CLUSTER_NAME}", "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": f"{user}@{CLUSTER_NAME}",
    }


def write_kubeconfig(path: Path, pki: Pki, identity: Identity, server: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for one identity."""
    config = kubeconfig(
        server,
        _b64(pki.ca_cert),
        identity.user,
        {"client-certificate-data": _b64(pki.cert(identity)), "client-key-data": _b64(pki.key(identity))},
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
