"""`icd verify|keygen|encrypt|decrypt|logs|trace collect|trace analyze|compress` — operations
(docs/operations.md, docs/security.md, docs/scaling.md). The guide's scripts/*.py call these."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icd.defaults import LOOPBACK, TRITON_HTTP_PORT
from icd.errors import EXIT_FAILED  # a check ran and failed (checksum mismatch, validation below threshold)
from icd.io.urls import url_option

DEFAULT_ENDPOINT = f"http://{LOOPBACK}:{TRITON_HTTP_PORT}"

trace_app = typer.Typer(help="Triton trace collection and analysis.", no_args_is_help=True)

KeyFile = Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
    "--key-file", help="Key file (hex, from `icd keygen`); default $ICD_PERMUTATION_KEY or $ICD_PERMUTATION_KEY_FILE.")]


def verify(path: Annotated[Path, typer.Argument(help="Model repository, model folder or version folder.")]) -> None:
    """Check every exported version folder against its checksums.sha256; report every mismatch."""
    from icd.ops.checksums import verify_path

    report = verify_path(path)
    for finding in report.findings:
        typer.echo(f"FAIL {finding.line()}")
    status = "OK" if report.ok else f"{len(report.findings)} problem(s)"
    typer.echo(f"{status}: {report.files_checked} files in {len(report.folders)} version folder(s) and "
               f"{len(report.configs)} config.pbtxt checked")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def keygen(
    output: Annotated[Path, typer.Argument(help="Key file to create (mode 0600).")] = Path("production.key"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Create a random AES-256 key file readable only by its owner."""
    from icd.ops.crypto import generate_key

    path = generate_key(output, force=force)
    typer.echo(f"wrote {path} (mode 0600, 256-bit key)")


def encrypt(
    input: Annotated[Path, typer.Option("--input", help="File to encrypt (permutation.json).")],  # noqa: A002
    key_file: KeyFile = None,
    output: Annotated[Optional[Path], typer.Option(help="Encrypted file (default <input>.enc).")] = None,  # noqa: UP007
    keep_plaintext: Annotated[bool, typer.Option(help="Keep the plaintext file next to the encrypted one.")] = False,
    update_manifest: Annotated[bool, typer.Option(help="Rewrite checksums.sha256 of the folder.")] = True,
) -> None:
    """Encrypt a permutation file with AES-256-GCM."""
    from icd.ops.crypto import encrypt_file, read_key

    result = encrypt_file(input, read_key(key_file), output, keep_plaintext, update_manifest)
    typer.echo(f"encrypted {result.source} -> {result.output} (AES-256-GCM)"
               + ("; plaintext removed" if result.plaintext_removed else "")
               + ("; checksums.sha256 updated" if result.manifest_updated else ""))
    requirement = result.key_requirement(key_file)
    if requirement:
        typer.echo(f"key required: {requirement}")


def decrypt(
    input: Annotated[Path, typer.Option("--input", help="Encrypted file (*.enc).")],  # noqa: A002
    key_file: KeyFile = None,
    output: Annotated[Optional[Path], typer.Option(help="Plaintext output (default: name without .enc).")] = None,  # noqa: UP007
) -> None:
    """Decrypt an encrypted permutation file (wrong key / tampered → refused, exit 2)."""
    from icd.ops.crypto import decrypt_to_file, read_key

    path = decrypt_to_file(input, read_key(key_file), output)
    typer.echo(f"decrypted {input} -> {path}")


def logs(
    log_file: Annotated[Path, typer.Option("--log-file", help="Log with ICD lines (and Triton's own).")],
    metric: Annotated[str, typer.Option(help="Numeric ICD field; a.b for nested (profile.forward_ms).")] = "permutation_time",
    report: Annotated[Path, typer.Option(help="HTML report to write.")] = Path("icd_analysis.html"),
) -> None:
    """Analyze structured ICD log lines: distribution, percentiles over time, per model, anomalies."""
    from icd.ops.log_report import analyze_log_file

    summary = analyze_log_file(log_file, metric, report)
    typer.echo(f"{summary['icd_records']} ICD records, {summary['malformed_lines']} malformed lines skipped, "
               f"{summary['triton_lines']} Triton lines; time axis: {summary['time_axis']}")
    for row in summary["models"]:
        typer.echo(f"  {row['model']}: n={row['count']} p50={row['p50']:.6g} p95={row['p95']:.6g} "
                   f"p99={row['p99']:.6g} max={row['max']:.6g} anomalies={row['anomalies']}")
    typer.echo(f"report: {summary['report']}")


@trace_app.command("collect")
def trace_collect(
    endpoint: Annotated[str, typer.Option(callback=lambda value: url_option(value, "--endpoint"),
                                          help="Triton HTTP endpoint (on this host).")] = DEFAULT_ENDPOINT,
    model: Annotated[str, typer.Option(help="Model to trace.")] = "bert_icd",
    duration: Annotated[float, typer.Option(min=0.001, max=86400.0, help="Seconds of load while tracing.")] = 60.0,
    output: Annotated[Path, typer.Option(help="Folder for trace files + client summary.")] = Path("traces"),
    trace_rate: Annotated[int, typer.Option(min=1, help="Trace one request in N.")] = 1,
    log_frequency: Annotated[int, typer.Option(min=1, help="Traces per file Triton writes.")] = 50,
    concurrency: Annotated[int, typer.Option(min=1, help="Closed-loop clients.")] = 4,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per request.")] = 1,
    input_shape: Annotated[int, typer.Option(min=1, max=8192, help="Tokens per row.")] = 128,
    server_trace_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Host folder where the server's trace files appear (Triton in a container: the folder mounted at "
             "its trace path; compose: deploy/triton/triton-traces).")] = None,
) -> None:
    """Turn on Triton tracing for a model, drive load, collect the per-request timestamps."""
    from icd.ops.trace_collect import TraceCollectSettings, collect

    record = collect(TraceCollectSettings(endpoint.rstrip("/"), model, duration, output, trace_rate, log_frequency,
                                          concurrency, batch_size, input_shape, server_trace_dir=server_trace_dir))
    typer.echo(f"{len(record['files'])} trace file(s) from {record['client_requests']} requests -> {output}")


@trace_app.command("analyze")
def trace_analyze(folder: Annotated[Path, typer.Argument(help="Folder written by `icd trace collect`.")]) -> None:
    """Break latency into queue / compute input / infer / compute output / network; name the bottleneck; plot."""
    from icd.ops.trace_report import analyze_folder, format_table

    typer.echo(format_table(analyze_folder(folder)))


def compress(
    input_dir: Annotated[Path, typer.Option("--input-dir", help="Model repository (or one model/version folder).")],
    compression_ratio: Annotated[float, typer.Option(
        help="Share of a matrix's off-diagonal pairs kept, largest |w| first (0, 1].")] = 0.1,
    validate_accuracy: Annotated[bool, typer.Option(
        help="Solve from the original and the compressed matrix; keep only if the objective ratio >= threshold.")]
    = False,
    min_objective_ratio: Annotated[float, typer.Option(help="Validation threshold.")] = 0.99,
    escalate: Annotated[bool, typer.Option(
        help="A matrix that fails at the asked ratio keeps 2x, 4x ... the entries until it passes "
             "(--no-escalate: keep the original file and exit 1).")] = True,
) -> None:
    """Compress correlation_matrix.npz files (top-|w| entries, float16, narrow indices); per-matrix report."""
    from icd.ops.compress import compress_tree

    results = compress_tree(input_dir, compression_ratio, validate_accuracy, min_objective_ratio, escalate)
    failed = False
    for res in results:
        typer.echo(f"{res.path}: {res.bytes_before} -> {res.bytes_after} bytes ({res.status.value})"
                   + (f"; worst objective ratio {res.worst_ratio:.4f}" if res.worst_ratio is not None else ""))
        for report in res.matrices:
            typer.echo(report.line(min_objective_ratio))
        below = [r for r in res.matrices if r.asked_ratio is not None and r.asked_ratio < min_objective_ratio]
        if below:
            fixes = ", ".join(f"{r.name} at {r.passing_share:g}" if r.passing_share else f"{r.name}: none"
                              for r in below)
            verb = "kept more" if escalate else "would pass"
            typer.echo(f"  {len(below)} of {len(res.matrices)} matrices below {min_objective_ratio} at "
                       f"--compression-ratio {compression_ratio:g}; {verb}: {fixes}")
        failed |= res.failed
    if failed:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("verify")(verify)
    app.command("keygen")(keygen)
    app.command("encrypt")(encrypt)
    app.command("decrypt")(decrypt)
    app.command("logs")(logs)
    app.add_typer(trace_app, name="trace")
    app.command("compress")(compress)
