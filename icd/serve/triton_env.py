"""Where the bundled ``tritonserver`` lives and what it needs to run here (no Docker).

The ``nvidia-pytriton`` wheel ships the real Triton 2.51 binary with only the python backend. Three traps
(docs/serving.md, ``FACTS.md``) are handled here:

1. the python backend stub links the system libpython, so ``LD_LIBRARY_PATH`` must start with this Python's
   ``LIBDIR`` (else model load fails with ``'_thread.RLock' object has no attribute '_recursion_count'``);
2. the stub takes ``site-packages`` from the first ``python`` on ``PATH`` (it ignores ``PYTHONPATH``), so this
   interpreter's ``bin`` must come first (else numpy 2 is loaded and every inference fails);
3. the stub for this Python version must sit in ``<backend-dir>/python/`` next to ``libtriton_python.so``.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from icd.errors import UserError
from icd.serve.backend.icd_runtime import THREADS_ENV

#: Environment variable that names another ``tritonserver`` binary (tests use it for "binary missing").
TRITONSERVER_BIN_ENV = "ICD_TRITONSERVER_BIN"

_PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


def pytriton_root() -> Path:
    """Folder of the Triton distribution bundled in ``nvidia-pytriton``."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def tritonserver_binary() -> Path:
    """The ``tritonserver`` executable to run (``$ICD_TRITONSERVER_BIN`` or the bundled one).

    Raises:
        UserError: the binary does not exist or is not executable.
    """
    override = os.environ.get(TRITONSERVER_BIN_ENV)
    path = Path(override) if override else pytriton_root() / "bin" / "tritonserver"
    if not path.is_file() or not os.access(path, os.X_OK):
        where = f"${TRITONSERVER_BIN_ENV}={override}" if override else "the nvidia-pytriton wheel"
        raise UserError(f"tritonserver binary not found at {path} (from {where}); pip install nvidia-pytriton==0.7.0")
    return path


def python_stub_dir() -> Path:
    """The python backend stub built for this interpreter's version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = pytriton_root() / "python_backend_stubs" / version
    if not (folder / "triton_python_backend_stub").is_file():
        raise UserError(f"no Triton python backend stub for Python {version} in {folder.parent}")
    return folder


def prepare_backend_dir(target: Path) -> Path:
    """Build ``target/python/`` = the bundled python backend + this Python's stub (copied, idempotent).

    Returns:
        ``target``, to pass as ``--backend-directory``.
    """
    source = pytriton_root() / "backends" / "python"
    python_dir = Path(target) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in _PYTHON_BACKEND_FILES:
        _copy_if_changed(source / name, python_dir / name)
    _copy_if_changed(python_stub_dir() / "triton_python_backend_stub", python_dir / "triton_python_backend_stub")
    return Path(target)


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.stat().st_mtime >= src.stat().st_mtime:
        return
    shutil.copy2(src, dst)


def server_environment(extra: Mapping[str, str] | None = None, repository: Path | None = None) -> dict[str, str]:
    """The environment for ``tritonserver``: this process's, with the libpython and PATH fixes, then ``extra``.

    With ``repository``, ``$ICD_THREADS_PER_INSTANCE`` is set to the thread budget of the models in it (cores /
    instances, :mod:`icd.runtimes.threads`) unless this process or ``extra`` already sets it.
    """
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    # The copied stub loses its $ORIGIN rpath to nvidia_pytriton.libs (libcudart): put that folder on the path too.
    bundled_libs = str(pytriton_root().parent.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, bundled_libs, env.get("LD_LIBRARY_PATH", "")) if p
    )
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (venv_bin, env.get("PATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if extra:
        env.update(extra)
    if repository is not None and not env.get(THREADS_ENV):
        from icd.runtimes.threads import repository_budget

        env[THREADS_ENV] = str(repository_budget(repository, env).threads)
    return env
