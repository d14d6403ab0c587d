"""nginx in front of one or more local Triton servers: TLS termination and/or round-robin scale-out.

The embedded counterpart of ``docker-compose.secure.yml`` (TLS on one port, Triton only on loopback) and
``docker-compose.scale.yml`` (N Tritons behind one nginx). The process is run by icd's one nginx process manager
(:class:`icd.rollout.nginx_process.NginxProcess`): ``nginx -t`` before start, the port checked free first, a
graceful stop by PID that waits for the master.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from icd.defaults import LOOPBACK
from icd.errors import UserError
from icd.rollout.nginx_process import NginxProcess

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
        self._process = NginxProcess(workdir, nginx_bin)
        self.spec: ProxySpec | None = None

    @property
    def conf_path(self) -> Path:
        return self._process.conf_path

    @property
    def pid(self) -> int | None:
        return self._process.master_pid()

    @property
    def url(self) -> str:
        if self.spec is None:
            raise UserError("proxy not started")
        scheme = "https" if self.spec.tls else "http"
        return f"{scheme}://{self.spec.listen_host}:{self.spec.listen_port}"

    def error_tail(self) -> str:
        return self._process.error_tail()

    def start(self, spec: ProxySpec) -> NginxProxy:
        """Write, test (``nginx -t``) and start the configuration; wait until the port accepts connections.

        Raises:
            UserError: nginx missing, the port in use, the config refused, or nginx did not come up.
        """
        spec.validate()
        text = render_conf(spec, self._process.workdir)
        self._process.start(text, [(spec.listen_host, spec.listen_port)],
                            ready=lambda: _port_open(spec.listen_host, spec.listen_port), timeout_s=READY_TIMEOUT_S)
        self.spec = spec
        return self

    def stop(self) -> None:
        """Graceful stop of the master by PID, waited for (SIGKILL after the timeout). Idempotent."""
        self._process.stop(STOP_TIMEOUT_S)

    def __enter__(self) -> NginxProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
