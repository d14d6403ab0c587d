"""Run docs/guide.md as a script: every ```bash block, command by command, in one shell session.

The guide's command blocks (fenced with the info string ``bash``; ``bash gpu-host`` and other languages are not
run) are split into commands (``\\`` continuations joined, comment-only lines dropped). Each command runs with
``bash -c`` in the folder and environment the previous ones left (``cd`` and ``export`` carry over, as in a
terminal). Per command: exit code, wall time, the end of its output.

Options for running it shorter (documented in docs/guide.md, "The guide as a test"):

* ``short_s`` (``bench/guide_run.py --short-durations``, default ``$ICD_GUIDE_SHORT_S``): every duration flag (``--duration``, ``--test-duration``,
  ``--monitor-duration``, ``--validation-time``) is capped at this many seconds;
* ``substitutions``: ``OLD=NEW`` text replacements (e.g. ``configs/bert.json=tests/guide/minilm_ci.json``);
* ``ports``: guide port → port used (the compose variables are set and ``localhost:<guide port>`` rewritten), so a
  test never binds a fixed port;
* ``appends``: extra flags for commands containing a text (a script whose default endpoint must follow ``ports``).

Example:
    >>> commands = parse_guide(Path("docs/guide.md"))                           # doctest: +SKIP
    >>> results = run_guide(commands, RunOptions(cwd=Path("."), short_s=3))    # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from icd.errors import UserError

SHORT_ENV = "ICD_GUIDE_SHORT_S"
CI_SHORT_S = 3.0
CI_CONFIG = "tests/guide/minilm_ci.json"
CI_WATCH_S = 12.0
"""The blue-green watch of the CI variant: long enough for a few windows of generated traffic."""
CI_LOAD_RATE = 2.0
"""Generated req/s where the guide page says 5: what a loaded 2-core CI machine serves without queueing up."""
LENIENT_MS = 60000
"""Latency SLO the CI variant gives the commands that judge latency: a loaded CI machine must not fail the guide
on timing (the SLO checks themselves are tested in tests/rollout and tests/tune)."""
DURATION_FLAGS = ("--duration", "--test-duration", "--monitor-duration", "--validation-time")
PORT_VARIABLES = {
    8000: "TRITON_HTTP_PORT", 8011: "TRITON_GRPC_PORT", 8002: "TRITON_METRICS_PORT", 9090: "PROMETHEUS_PORT",
    9093: "ALERTMANAGER_PORT", 3000: "GRAFANA_PORT", 8080: "ROUTER_PORT", 9180: "ROUTER_EXPORTER_PORT",
    8001: "GREEN_HTTP_PORT", 8101: "GREEN_GRPC_PORT", 8102: "GREEN_METRICS_PORT",
}
"""The guide's port layout (docs/guide.md, "Ports") and the compose variable that moves each port."""
OUTPUT_TAIL_CHARS = 4000
_FENCE = re.compile(r"^```(?P<info>[^`]*)$")


@dataclass(frozen=True)
class GuideCommand:
    """One command of the guide: its section, its text (continuations joined), its line in the file, and its
    trailing comments (``guide: <docker line>`` or ``(added) ...``)."""

    section: str
    text: str
    line: int
    comment: str = ""

    @property
    def added(self) -> bool:
        """Not in the guide: a command docs/guide.md adds (marked ``(added)``)."""
        return "(added)" in self.comment


def _split_comment(line: str) -> tuple[str, str]:
    """``line`` split into code and its trailing ``# comment`` (a ``#`` inside quotes or glued to a word is code)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def parse_guide(path: Path) -> list[GuideCommand]:
    """The commands of every ```bash block of ``path``, in order.

    Raises:
        UserError: the file is missing or a block is not closed.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the guide ({exc.strerror})") from None
    commands: list[GuideCommand] = []
    section, block, start, pending, pending_line, comments = "", None, 0, "", 0, []
    for number, line in enumerate(lines, 1):
        fence = _FENCE.match(line.strip())
        if block is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            elif fence:
                block, start = fence.group("info").strip(), number
            continue
        if fence and not fence.group("info").strip():
            if pending:
                raise UserError(f"{path}:{pending_line}: command continues past the end of its block")
            block = None
            continue
        if block != "bash":
            continue
        text, comment = _split_comment(line)
        if not text.strip():
            continue
        if not pending:
            pending_line, comments = number, []
        comments += [comment] if comment else []
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        commands.append(GuideCommand(section, (pending + text.strip()).strip(), pending_line, " ".join(comments)))
        pending = ""
    if block is not None:
        raise UserError(f"{path}:{start}: code block not closed")
    return commands


@dataclass
class RunOptions:
    """How to run the guide here (see the module docstring)."""

    cwd: Path
    short_s: float | None = None
    flag_caps: Mapping[str, float] = field(default_factory=dict)
    """Per-flag caps that replace ``short_s`` for that flag (e.g. a watch that needs more than a few seconds)."""
    substitutions: Sequence[tuple[str, str]] = ()
    ports: Mapping[int, int] = field(default_factory=dict)
    appends: Sequence[tuple[str, str]] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3600.0


def _seconds(value: str) -> float | None:
    from icd.load.timespan import parse_timespan

    try:
        return parse_timespan(value)
    except ValueError:
        return None


def rewrite(command: str, options: RunOptions) -> str:
    """The command as it runs under ``options``: substitutions, ports, capped durations, appended flags."""
    text = command
    for old, new in options.substitutions:
        text = text.replace(old, new)
    for guide_port, port in options.ports.items():
        text = re.sub(rf"(localhost|127\.0\.0\.1):{guide_port}\b", rf"\g<1>:{port}", text)
    if options.short_s is not None:
        def cap(match: re.Match[str]) -> str:
            seconds, limit = _seconds(match.group(2)), options.flag_caps.get(match.group(1), options.short_s)
            if seconds is None or seconds <= limit:
                return match.group(0)
            return f"{match.group(1)} {limit:g}"

        text = re.sub(rf"({'|'.join(map(re.escape, DURATION_FLAGS))})[ =](\S+)", cap, text)
    for needle, extra in options.appends:
        if needle in text:
            text = f"{text} {extra}"
    return text


def ci_options(cwd: Path, ports: Mapping[int, int], env: Mapping[str, str] | None = None) -> RunOptions:
    """The shortened variant docs/guide.md documents ("The guide as a test"): what tests/guide runs."""
    http = ports.get(8000, 8000)
    return RunOptions(
        cwd=cwd, short_s=CI_SHORT_S, flag_caps={"--validation-time": CI_WATCH_S}, ports=ports, env=dict(env or {}),
        timeout_s=900,
        substitutions=[("configs/bert.json", CI_CONFIG), ("--target-latency 100", f"--target-latency {LENIENT_MS}"),
                       ("--load-rate 5", f"--load-rate {CI_LOAD_RATE:g}")],
        appends=[("optimize_instances.py", f"--endpoint http://localhost:{http} --instance-counts 1 --threads 1 "
                                           "--max-batch-sizes 8 --queue-delays-us 0 --concurrency 1 --duration 2"),
                 ("deploy_canary.py", "--interval 10s --min-samples 2"), ("monitor_canary.py", "--interval 10s"),
                 ("validate_deployment.py", f"--slo-p95-ms {LENIENT_MS}"),
                 ("switch_traffic.py", f"--slo-p95-ms {LENIENT_MS} --precheck-duration 2s --watch-interval 3s "
                                       "--min-samples 3")],
    )


def port_environment(ports: Mapping[int, int]) -> dict[str, str]:
    """The compose variables that move the guide's ports to ``ports``."""
    return {PORT_VARIABLES[guide]: str(port) for guide, port in ports.items() if guide in PORT_VARIABLES}


@dataclass
class CommandResult:
    """What one command did."""

    section: str
    line: int
    command: str
    added: bool
    ran: str
    returncode: int
    seconds: float
    output_tail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_guide(commands: Sequence[GuideCommand], options: RunOptions,
              on_result: Callable[[CommandResult], bool] = lambda result: True) -> list[CommandResult]:
    """Run ``commands`` in order in one shell session; stop when ``on_result`` returns False."""
    env = {**os.environ, **port_environment(options.ports), **options.env}
    cwd = Path(options.cwd).resolve()
    results = []
    with tempfile.TemporaryDirectory(prefix="icd-guide-") as tmp:
        env_file, pwd_file = Path(tmp) / "env", Path(tmp) / "pwd"
        for command in commands:
            ran = rewrite(command.text, options)
            script = (f"{ran}\n__icd_rc=$?\nenv -0 > {env_file}\npwd > {pwd_file}\nexit $__icd_rc\n")
            began = time.perf_counter()
            try:
                done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, timeout=options.timeout_s, check=False)
                code, output = done.returncode, done.stdout.decode(errors="replace")
            except subprocess.TimeoutExpired as exc:
                code, output = 124, (exc.stdout or b"").decode(errors="replace") + "\n[timed out]"
            seconds = time.perf_counter() - began
            if env_file.is_file() and pwd_file.is_file():
                env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
                cwd = Path(pwd_file.read_text().strip())
                env_file.unlink()
                pwd_file.unlink()
            result = CommandResult(command.section, command.line, command.text, command.added, ran, code,
                                   round(seconds, 2),
                                   output[-OUTPUT_TAIL_CHARS:])
            results.append(result)
            if not on_result(result):
                break
    return results


def make_workspace(repo: Path, root: Path) -> Path:
    """A scratch copy to run the guide in: ``deploy/`` (no models, traces or .env), ``configs/``,
    ``tests/guide/`` (the CI config), ``scripts/`` (linked), a fresh ``.icd`` state folder (with the repository's
    fetched checkpoints linked as ``.icd/models``, where configs/bert.json looks) and ``results/``."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo / "deploy", root / "deploy",
                    ignore=shutil.ignore_patterns("models", "models-green", "triton-traces", ".env"))
    shutil.copytree(repo / "configs", root / "configs")
    shutil.copytree(repo / "tests" / "guide", root / "tests" / "guide",
                    ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    os.symlink(repo / "scripts", root / "scripts")
    (root / ".icd").mkdir()
    if (repo / ".icd" / "models").is_dir():
        os.symlink((repo / ".icd" / "models").resolve(), root / ".icd" / "models")
    (root / "results").mkdir()
    return root


def stop_workspace_stacks(work: Path) -> None:
    """Stop every stack service recorded in ``work/.icd`` (blue and green), by PID."""
    from icd.stack.compose_file import load_compose
    from icd.stack.compose_stack import down
    from icd.stack.state import StackState

    for name in ("docker-compose.green.yml", "docker-compose.yml"):
        project = load_compose(work / "deploy" / "triton" / name)
        down(project, StackState(work / ".icd", project.name))
