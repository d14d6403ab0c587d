"""Debian's ``prometheus`` run locally on 127.0.0.1 with a generated configuration.

Example:
    >>> server = PrometheusServer(PrometheusConfig(...), port=19090, workdir=Path(".icd/prometheus"))  # doctest: +SKIP
    >>> server.start(); print(server.url); server.stop()                                           # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType

from icd.defaults import LOOPBACK, PROMETHEUS_PORT
from icd.errors import UserError
from icd.io.atomic import write_text_atomic
from icd.monitor import promtool
from icd.monitor.paths import CONSOLE_LIBRARIES_DIR, CONSOLES_DIR, monitoring_dir
from icd.monitor.process import LocalProcess
from icd.monitor.prometheus_config import PrometheusConfig

PROMETHEUS_BINARY = "prometheus"
DEBIAN_WEB_ASSETS = Path("/usr/share/prometheus/web")


class PrometheusServer:
    """One local Prometheus: writes ``prometheus.yml`` into ``workdir``, keeps its TSDB in ``workdir/data``.

    Args:
        config: what to scrape and which rules to load.
        port: listen port on 127.0.0.1.
        workdir: folder for the generated config, the data dir and ``prometheus.log``.
        consoles: folder of console templates (default: the shipped ``consoles/``), served at ``/consoles/``.
        console_libraries: folder of console libraries (default: the shipped ``console_libraries/``).
        retention: TSDB retention time.
    """

    def __init__(
        self,
        config: PrometheusConfig,
        port: int = PROMETHEUS_PORT,
        workdir: Path = Path(".icd/prometheus"),
        consoles: Path | None = None,
        console_libraries: Path | None = None,
        retention: str = "2d",
    ) -> None:
        self.config = config
        self.port = int(port)
        self.workdir = Path(workdir)
        self.consoles = consoles
        self.console_libraries = console_libraries
        self.retention = retention
        self._process: LocalProcess | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def write_config(self) -> Path:
        """Write the generated ``prometheus.yml`` and check it with ``promtool check config``.

        Raises:
            UserError: promtool rejects the generated configuration.
        """
        write_text_atomic(self.config_file, self.config.to_yaml())
        result = promtool.check_config(self.config_file)
        if not result.ok:
            raise UserError(f"generated {self.config_file} fails promtool check config: {result.output.strip()}")
        return self.config_file

    def command(self) -> list[str]:
        """The ``prometheus`` command line."""
        exe = shutil.which(PROMETHEUS_BINARY) or PROMETHEUS_BINARY
        shipped = None if self.consoles and self.console_libraries else monitoring_dir()
        consoles = self.consoles or shipped / CONSOLES_DIR
        libraries = self.console_libraries or shipped / CONSOLE_LIBRARIES_DIR
        args = [
            exe,
            f"--config.file={self.config_file.resolve()}",
            f"--storage.tsdb.path={(self.workdir / 'data').resolve()}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            f"--web.console.templates={Path(consoles).resolve()}",
            f"--web.console.libraries={Path(libraries).resolve()}",
            "--web.enable-lifecycle",
        ]
        if DEBIAN_WEB_ASSETS.is_dir():
            args.append(f"--web.local-assets={DEBIAN_WEB_ASSETS}")
        return args

    def start(self, timeout_s: float = 120.0) -> PrometheusServer:
        """Write the config, start Prometheus and wait for ``/-/ready``."""
        self.write_config()
        self._process = LocalProcess("prometheus", self.command(), self.log_file, f"{self.url}/-/ready",
                                     self.port)
        self._process.start(timeout_s)
        return self

    def stop(self) -> int | None:
        """Stop by PID and wait (idempotent)."""
        return self._process.stop() if self._process else None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
