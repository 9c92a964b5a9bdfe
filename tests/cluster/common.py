"""What the test bed's parts share: processes, readiness waits, certificates, kubeconfigs, addresses.

Used by ``testbed.py`` (the control plane, KubeRay, the S3 store) and ``node.py`` (the real node).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"


class TestbedError(RuntimeError):
    """A component of the test bed failed to build, start or become ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise TestbedError(f"{path} is missing: run `tests/cluster/build.sh` (or `make testbed`) first")
    return str(path)


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------


SERVICE_CIDR = "10.0.0.0/24"
API_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the first address of SERVICE_CIDR
NODE_NETWORK_GATEWAY = "10.88.0.1"  # the real node's address (tests/cluster/node.py); the API server advertises it


@dataclass
class CertificateAuthority:
    """The test bed's CA: signs the API server's, the components' and the real node's certificates."""

    cert: object  # cryptography.x509.Certificate
    key: object  # an EC private key

    @classmethod
    def create(cls, pki: Path) -> CertificateAuthority:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        pki.mkdir(parents=True, exist_ok=True)
        valid = _validity()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slipway-testbed-ca")])
        usage = x509.KeyUsage(
            digital_signature=True,
            key_cert_sign=True,
            crl_sign=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256())
        )
        (pki / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / "ca.key").write_bytes(_pem_key(key))
        return cls(cert, key)

    @classmethod
    def load(cls, pki: Path) -> CertificateAuthority:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
        return cls(cert, key)

    def issue(self, pki: Path, name: str, cn: str, orgs: list[str], server_sans: list[str] | None = None) -> None:
        """``pki/name.crt`` and ``.key``: a client certificate, or a serving one when ``server_sans`` is given."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        valid = _validity()
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        server = server_sans is not None
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)  # type: ignore[attr-defined]
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server_sans is not None:
            names: list[x509.GeneralName] = []
            for san in server_sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())  # type: ignore[arg-type]
        pki.mkdir(parents=True, exist_ok=True)
        (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{name}.key").write_bytes(_pem_key(key))


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def kubeconfig_text(server: str, pki: Path, user: str = "admin") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: testbed
          cluster:
            server: {server}
            certificate-authority: {pki / "ca.crt"}
        users:
        - name: {user}
          user:
            client-certificate: {pki / f"{user}.crt"}
            client-key: {pki / f"{user}.key"}
        contexts:
        - name: testbed
          context: {{cluster: testbed, user: {user}}}
        current-context: testbed
        """
    )


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.1)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_until(what: str, check: object, timeout: float, component: Component | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if component is not None and not component.alive():
            raise TestbedError(f"{component.name} exited while waiting for {what}:\n{component.tail()}")
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:  # a component that is still starting refuses connections
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    detail = f"\nlast error: {last_error}" if last_error else ""
    tail = f"\n--- {component.name} log ---\n{component.tail()}" if component else ""
    raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tail}")


def kuberay_argv(
    binary: Path, kubeconfig: Path, metrics_port: int, probe_port: int, namespaces: list[str]
) -> list[str]:
    """KubeRay's operator as the test bed runs it: no leader election, probes on loopback, some namespaces only."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--enable-leader-election=false",
        f"--metrics-addr=127.0.0.1:{metrics_port}",
        f"--health-probe-bind-address=127.0.0.1:{probe_port}",
        f"--watch-namespace={','.join(namespaces)}",
        "--log-stdout-encoder=console",
    ]
