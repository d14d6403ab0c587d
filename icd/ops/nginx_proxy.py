"""nginx in front of one or more local Triton servers: TLS termination and/or round-robin scale-out.

The embedded counterpart of ``docker-compose.secure.yml`` (TLS on one port, Triton only on loopback) and
``docker-compose.scale.yml`` (N Tritons behind one nginx). nginx runs in the foreground (``daemon off``) as a
child process with its own prefix folder; :meth:`NginxProxy.stop` sends SIGTERM to the master by PID and waits.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from icd.defaults import LOOPBACK
from icd.errors import UserError
from icd.io.atomic import write_text_atomic

NGINX_BIN = "nginx"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ProxySpec:
    listen_port: int
    """Port nginx listens on."""
    upstreams: tuple[str, ...]
    """Triton HTTP addresses ``host:port`` (round robin; a failed server is retried on the next)."""
    tls: TlsFiles | None = None
    """Terminate TLS with these files (HTTP/1.1 over TLS 1.2/1.3 only)."""
    listen_host: str = LOOPBACK
    worker_processes: int = 1

    def validate(self) -> None:
        if not self.upstreams:
            raise UserError("proxy: at least one upstream Triton address is needed")
        if self.tls is not None:
            for path in (self.tls.cert, self.tls.key):
                if not Path(path).is_file():
                    raise UserError(f"proxy: TLS file not found: {path}")


def render_conf(spec: ProxySpec, prefix: Path) -> str:
    """nginx.conf text for ``spec`` (logs and temp files under ``prefix``)."""
    servers = "\n".join(f"        server {addr} max_fails=1 fail_timeout=2s;" for addr in spec.upstreams)
    if spec.tls is None:
        listen = f"listen {spec.listen_host}:{spec.listen_port};"
        tls = ""
    else:
        listen = f"listen {spec.listen_host}:{spec.listen_port} ssl;"
        tls = (f"        ssl_certificate {Path(spec.tls.cert).resolve()};\n"
               f"        ssl_certificate_key {Path(spec.tls.key).resolve()};\n"
               "        ssl_protocols TLSv1.2 TLSv1.3;\n")
    return f"""worker_processes {spec.worker_processes};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log combined;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    client_max_body_size 64m;
    upstream triton {{
{servers}
        keepalive 32;
    }}
    server {{
        {listen}
{tls}        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            add_header X-ICD-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class NginxProxy:
    """One nginx process serving :class:`ProxySpec` from ``workdir``."""

    def __init__(self, workdir: Path, nginx_bin: str = NGINX_BIN) -> None:
        self.workdir = Path(workdir)
        self.nginx_bin = nginx_bin
        self._proc: subprocess.Popen[bytes] | None = None
        self.spec: ProxySpec | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        if self.spec is None:
            raise UserError("proxy not started")
        scheme = "https" if self.spec.tls else "http"
        return f"{scheme}://{self.spec.listen_host}:{self.spec.listen_port}"

    def error_tail(self, chars: int = 400) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace")[-chars:].strip() if path.is_file() else ""

    def start(self, spec: ProxySpec) -> NginxProxy:
        """Write, test (``nginx -t``) and start the configuration; wait until the port accepts connections.

        Raises:
            UserError: nginx missing, the config is refused, or nginx did not come up.
        """
        spec.validate()
        binary = shutil.which(self.nginx_bin)
        if binary is None:
            raise UserError(f"{self.nginx_bin}: not found on PATH (apt-get install nginx)")
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.conf_path, render_conf(spec, self.workdir.resolve()))
        base = [binary, "-p", str(self.workdir.resolve()), "-e", str(self.workdir.resolve() / "error.log"),
                "-c", str(self.conf_path.resolve())]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True, check=False)  # noqa: S603
        if check.returncode != 0:
            raise UserError(f"nginx refused {self.conf_path}: {check.stderr.strip()[-400:]}")
        self._proc = subprocess.Popen(base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # noqa: S603
                                      stderr=subprocess.DEVNULL)
        self.spec = spec
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise UserError(f"nginx exited with {self._proc.returncode}: {self.error_tail()}")
            if _port_open(spec.listen_host, spec.listen_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise UserError(f"nginx not listening on {spec.listen_port} after {READY_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """SIGTERM the master by PID and wait (SIGKILL after the timeout). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> NginxProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
