"""The nginx traffic router: start, apply a new :class:`RouterSpec` with a graceful reload, stop.

A change writes and tests the new configuration (``nginx -t``) before it replaces the live one, then sends SIGHUP to
the master (:class:`icd.rollout.nginx_process.NginxProcess`): new workers take new connections while old workers
finish their in-flight requests, so no request is dropped. :meth:`NginxRouter.apply` returns once the router
answers with the new generation. Weights, match rules, mirror and active colour change together in one reload
(:meth:`NginxRouter.set_routes`): a rollout is never half-switched.

Example:
    router = NginxRouter(Path("runs/router"))
    router.start(RouterSpec(8080, "bert", {"bert_baseline": 90, "bert_icd": 10}, {"blue": ["127.0.0.1:8000"]}, "blue"))
    router.set_weights({"bert_baseline": 50, "bert_icd": 50})
    router.stop()
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from icd.errors import UserError
from icd.io.atomic import write_json_atomic
from icd.rollout.nginx_process import NGINX_BIN, READY_TIMEOUT_S, STOP_TIMEOUT_S, NginxError, NginxProcess
from icd.rollout.router_config import ACCESS_LOG, SPEC_FILE, MatchRule, MirrorSpec, RouterSpec, render_nginx_conf

RouterError = NginxError
"""nginx refused a configuration or did not come up / apply it in time."""


@dataclass(frozen=True)
class Routes:
    """Everything a rollout tells the router at once (Flagger's ``SetRoutes``)."""

    weights: dict[str, float] | None = None
    """Variant → % of the traffic that no match rule takes; ``None`` keeps weights, rules and mirror as they are
    (a blue-green switch changes only the colour)."""
    match: tuple[MatchRule, ...] = ()
    """Header / cookie rules (A/B strategy)."""
    mirror: tuple[str, float] | None = None
    """``(candidate, share)`` to shadow, or ``None``."""
    active: str | None = None
    """Upstream colour to serve from (blue-green); ``None`` keeps the current one."""
    pinnable: tuple[str, ...] = field(default_factory=tuple)
    """0 %-weight variants a client may still pin by header."""

    def describe(self) -> str:
        parts = [", ".join(f"{k} {v:g}%" for k, v in self.weights.items())] if self.weights is not None else []
        parts += [f"{m.header or 'cookie ' + m.cookie}={m.value} -> {m.variant}" for m in self.match]
        if self.mirror:
            parts.append(f"mirror {self.mirror[1]:.0%} to {self.mirror[0]}")
        if self.active:
            parts.append(f"active {self.active}")
        return "; ".join(parts)


class NginxRouter:
    """One nginx router under ``workdir`` (config, pid, logs, ``router.json``)."""

    def __init__(self, workdir: str | Path, nginx_bin: str = NGINX_BIN) -> None:
        self.process = NginxProcess(workdir, nginx_bin)
        self.workdir = self.process.workdir

    # -- paths ---------------------------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.workdir / SPEC_FILE

    @property
    def conf_path(self) -> Path:
        return self.process.conf_path

    @property
    def pid_path(self) -> Path:
        return self.process.pid_path

    @property
    def access_log(self) -> Path:
        return self.workdir / ACCESS_LOG

    @property
    def spec(self) -> RouterSpec:
        """The last applied spec, read from ``router.json``."""
        if not self.spec_path.exists():
            raise UserError(f"{self.spec_path}: no router state here (start one with `icd router up`)")
        return RouterSpec.load(self.spec_path)

    @property
    def url(self) -> str:
        spec = self.spec
        return f"http://{spec.listen_host}:{spec.listen_port}"

    def master_pid(self) -> int | None:
        """The nginx master's pid, or ``None`` when it is not running."""
        return self.process.master_pid()

    def check(self, spec: RouterSpec) -> None:
        """Test the config ``spec`` renders with ``nginx -t`` (raises :class:`NginxError`); nothing starts."""
        self.process.check(self._render(spec))

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _render(self, spec: RouterSpec) -> str:
        try:
            return render_nginx_conf(spec, self.workdir, run_as_root=os.geteuid() == 0)
        except ValueError as exc:
            raise UserError(f"router: {exc}") from None

    def start(self, spec: RouterSpec, detach: bool = False) -> RouterSpec:
        """Write the config and start nginx; returns once it serves ``spec``'s generation.

        A port in use, a refused config or an nginx that does not come up leaves nothing behind (no stale state).

        Args:
            spec: the initial routing.
            detach: leave nginx running after this Python process exits (CLI use); stop it with :meth:`stop`
                from any process via the pid file.
        """
        text = self._render(spec)
        url = f"http://{spec.listen_host}:{spec.listen_port}"
        self.process.start(text, [(spec.listen_host, spec.listen_port)],
                           ready=lambda: _live_generation(url) == spec.generation,
                           on_written=lambda: write_json_atomic(self.spec_path, spec.to_dict()))
        if detach:
            self.process.detach()
        return spec

    def apply(self, change: Callable[[RouterSpec], RouterSpec] | RouterSpec) -> RouterSpec:
        """Apply a new spec (or a function of the current one) with a graceful reload; returns the live spec."""
        current = self.spec
        new = change(current) if callable(change) else change
        if dataclasses.replace(new, generation=current.generation) == current:
            return current  # nothing changes: no reload, no new generation
        new = dataclasses.replace(new, generation=current.generation + 1)
        text = self._render(new)
        if self.master_pid() is None:
            raise RouterError(f"{self.workdir}: nginx is not running")
        url = self.url
        old_text = self.conf_path.read_text()
        self.process.check(text)
        write_json_atomic(self.spec_path, new.to_dict())
        try:
            self.process.reload(text, ready=lambda: _live_generation(url) == new.generation)
        except NginxError:  # put the previous routing back: never leave a half-applied change
            write_json_atomic(self.spec_path, current.to_dict())
            self.process.reload(old_text, ready=lambda: _live_generation(url) == current.generation)
            raise
        return new

    def set_weights(self, weights: dict[str, float]) -> RouterSpec:
        """Route by new variant weights (percentages)."""
        return self.apply(lambda s: dataclasses.replace(s, weights=dict(weights)))

    def switch(self, colour: str) -> RouterSpec:
        """Send all traffic to the upstream colour ``colour`` (blue/green switch)."""
        return self.apply(lambda s: dataclasses.replace(s, active=colour))

    def set_routes(self, routes: Routes, comparator: str | None = None) -> RouterSpec:
        """Weights, match rules, mirror and colour in one reload (``comparator``: ``host:port`` when mirroring)."""
        def change(spec: RouterSpec) -> RouterSpec:
            if routes.weights is None:
                return dataclasses.replace(spec, active=routes.active or spec.active)
            mirror = None
            if routes.mirror is not None:
                if comparator is None:
                    raise UserError("router: mirroring needs a running shadow comparator (icd router mirror)")
                mirror = MirrorSpec(routes.mirror[0], routes.mirror[1], comparator)
            return dataclasses.replace(spec, weights=dict(routes.weights), match=list(routes.match), mirror=mirror,
                                       active=routes.active or spec.active, pinnable=list(routes.pinnable))

        return self.apply(change)

    def live_generation(self, timeout: float = 2.0) -> int | None:
        """The generation a *new* connection is served by, or ``None`` when the router does not answer."""
        return _live_generation(self.url, timeout)

    def wait_generation(self, generation: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until new connections are served with ``generation`` (raise :class:`RouterError` on timeout)."""
        url = self.url
        self.process.wait(lambda: _live_generation(url) == generation, timeout, f"serve generation {generation}")

    def error_tail(self, lines: int = 5) -> str:
        return self.process.error_tail(lines)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Graceful stop (SIGQUIT: finish in-flight requests), SIGKILL after ``timeout``; waits for the master."""
        return self.process.stop(timeout)

    def __enter__(self) -> NginxRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _live_generation(url: str, timeout: float = 2.0) -> int | None:
    try:
        resp = httpx.get(f"{url}/icd/router", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        return int(resp.json()["generation"])
    except (ValueError, KeyError, TypeError):
        return None
