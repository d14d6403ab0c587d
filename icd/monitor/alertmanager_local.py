"""Debian's ``prometheus-alertmanager`` run locally on 127.0.0.1 (no clustering)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType

from icd.defaults import ALERTMANAGER_PORT, LOOPBACK
from icd.monitor.paths import ALERTMANAGER_FILE, monitoring_dir
from icd.monitor.process import LocalProcess

ALERTMANAGER_BINARY = "prometheus-alertmanager"


class AlertmanagerServer:
    """One local Alertmanager.

    Args:
        port: listen port on 127.0.0.1.
        workdir: folder for its data and ``alertmanager.log``.
        config_file: configuration (default: the shipped ``alertmanager.yml``).
    """

    def __init__(self, port: int = ALERTMANAGER_PORT, workdir: Path = Path(".icd/alertmanager"),
                 config_file: Path | None = None) -> None:
        self.port = int(port)
        self.workdir = Path(workdir)
        self.config_file = Path(config_file) if config_file else monitoring_dir() / ALERTMANAGER_FILE
        self._process: LocalProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (the form prometheus.yml's alertmanagers take)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "alertmanager.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        exe = shutil.which(ALERTMANAGER_BINARY) or ALERTMANAGER_BINARY
        return [
            exe,
            f"--config.file={self.config_file.resolve()}",
            f"--storage.path={(self.workdir / 'data').resolve()}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--cluster.listen-address=",
        ]

    def start(self, timeout_s: float = 120.0) -> AlertmanagerServer:
        """Start Alertmanager and wait for ``/-/ready``."""
        self._process = LocalProcess("alertmanager", self.command(), self.log_file, f"{self.url}/-/ready",
                                     self.port)
        self._process.start(timeout_s)
        return self

    def stop(self) -> int | None:
        return self._process.stop() if self._process else None

    def __enter__(self) -> AlertmanagerServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
