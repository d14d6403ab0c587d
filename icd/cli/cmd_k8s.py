"""`icd k8s check|render` — icd's Kubernetes manifests and Helm values, validated offline (docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

k8s_app = typer.Typer(help="Kubernetes manifests and Helm values: offline validation and rendering.",
                      no_args_is_help=True)
EXIT_INVALID = 1
"""Exit code when a file checked has problems."""


@k8s_app.command("check")
def check(
    paths: Annotated[Optional[list[Path]], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Files or folders (default: deploy/k8s, deploy/kserve, deploy/helm).")] = None,
) -> None:
    """Validate manifests (Kubernetes / CRD schemas, strict), Helm values (chart schemas) and kustomizations."""
    from icd.errors import UserError
    from icd.k8s.validate import DEFAULT_PATHS, KUBERNETES_VERSIONS, validate_paths

    targets = tuple(paths) if paths else DEFAULT_PATHS
    missing = [p for p in targets if not Path(p).exists()]
    if missing:
        raise UserError(f"{missing[0]}: no such file or folder")
    files, findings = validate_paths(targets)
    for finding in findings:
        typer.echo(str(finding))
    typer.echo(f"{len(files)} file(s) checked against Kubernetes {', '.join(KUBERNETES_VERSIONS)} and the vendored "
               f"schemas: {len(findings)} problem(s)")
    if findings:
        raise typer.Exit(EXIT_INVALID)


@k8s_app.command("render")
def render(
    source: Annotated[Path, typer.Argument(help="A manifest or Helm values file with one document.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the result.")],
    assignments: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--set", help="PATH=VALUE (Helm style: a.b[0].c; value read as YAML). Repeatable.")] = None,
) -> None:
    """Write SOURCE with --set overrides to --out, validated first: on any problem nothing is written."""
    from icd.k8s.render import render as render_file

    typer.echo(f"wrote {render_file(source, assignments or [], out)}")


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.add_typer(k8s_app, name="k8s")
