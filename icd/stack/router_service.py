"""The ``x-icd-router`` of a compose file: the nginx router in front of the Triton colours, run on the host.

It is the router ``icd router up`` starts (:mod:`icd.rollout`), in the state folder's ``router/`` where
``icd ab``, ``icd canary``, ``icd switch`` find it, with its Prometheus exporter. This module only translates the
compose section into a router spec and calls the rollout package's public functions.
"""

from __future__ import annotations

import time
from pathlib import Path

from icd.errors import UserError
from icd.stack.compose_file import ROUTER_SERVICE, ComposeProject, RouterSection
from icd.stack.state import ServiceRecord, StackState

ROUTER_SUBDIR = "router"


class RouterService:
    kind = "router"

    def __init__(self, project: ComposeProject, section: RouterSection, state: StackState) -> None:
        self.project = project
        self.section = section
        self.state = state
        self.ports = {"http": section.port, **({"exporter": section.exporter_port} if section.exporter_port else {})}
        self.name = ROUTER_SERVICE

    def port_variables(self) -> dict[str, str | None]:
        return {"http": "ROUTER_PORT", "exporter": "ROUTER_EXPORTER_PORT"}

    @property
    def workdir(self) -> Path:
        """``<state>/router``: where ``icd router``, ``icd ab``, ``icd canary`` and ``icd switch`` look."""
        return self.state.state_dir / ROUTER_SUBDIR

    def start(self) -> ServiceRecord:
        from icd.rollout.router_config import RouterSpec
        from icd.rollout.router_nginx import NginxRouter
        from icd.rollout.router_ops import check_spec, start_exporter

        router = NginxRouter(self.workdir)
        running = router.master_pid()
        if running is not None:
            raise UserError(f"router: one already runs in {router.workdir} (nginx pid {running}); stop it with "
                            "`icd router down` or `icd stack down`")
        s = self.section
        spec = check_spec(RouterSpec(s.port, s.public_model, dict(s.variants), dict(s.upstreams), s.active))
        router.start(spec, detach=True)
        pids = [router.master_pid() or 0]
        if s.exporter_port:
            pids.append(start_exporter(router, s.exporter_port))
        return ServiceRecord(service=ROUTER_SERVICE, kind=self.kind, project=self.state.project,
                             compose_file=str(self.project.file), pids=pids, ports=dict(self.ports),
                             log_file=str(router.workdir / "error.log"), started=time.time(),
                             urls={"http": router.url, "workdir": str(router.workdir),
                                   **({"exporter": f"http://127.0.0.1:{s.exporter_port}/metrics"}
                                      if s.exporter_port else {})})


def stop(record: ServiceRecord) -> bool:
    """Stop the router (graceful SIGQUIT: in-flight requests finish), its exporter and its shadow comparator;
    returns whether nginx was running."""
    from icd.rollout.router_nginx import NginxRouter
    from icd.rollout.router_ops import stop_comparator, stop_exporter

    router = NginxRouter(Path(record.urls["workdir"]))
    was = router.stop()
    stop_exporter(router)
    stop_comparator(router)
    return was
