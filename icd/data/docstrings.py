"""Extract one corpus source's texts: the first paragraph of each public object's docstring.

Run as ``python -m icd.data.docstrings SOURCE`` it prints ``{"source", "texts"}`` as JSON. :mod:`icd.data.corpus`
runs it in a fresh interpreter per source, because what a module attribute *is* depends on what the process
imported before (torch replaces ``inspect.getfile``; a package shows a submodule as an attribute only once that
submodule was imported): in a fresh interpreter each source reads the same objects every time.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings
from collections.abc import Sequence

# Modules that import cleanly and quickly everywhere, with plenty of prose in their docstrings.
STDLIB_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fnmatch",
    "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging",
    "mailbox", "math", "mimetypes", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil", "platform",
    "plistlib", "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave",
    "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
)

STDLIB = "stdlib"

PACKAGE_MODULES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy", "numpy.linalg", "numpy.random", "numpy.fft", "numpy.ma", "numpy.polynomial", "numpy.lib",
              "numpy.testing"),
    "scipy": ("scipy.linalg", "scipy.sparse", "scipy.sparse.linalg", "scipy.sparse.csgraph", "scipy.stats",
              "scipy.optimize", "scipy.signal", "scipy.special", "scipy.integrate", "scipy.interpolate",
              "scipy.spatial", "scipy.cluster.hierarchy", "scipy.ndimage", "scipy.fft"),
    "torch": ("torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.fft", "torch.distributions",
              "torch.optim", "torch.utils.data", "torch.nn.init", "torch.autograd", "torch.special", "torch.sparse",
              "torch.nn.utils", "torch.export", "torch.fx", "torch.jit", "torch.amp", "torch.profiler"),
    "transformers": ("transformers.tokenization_utils_base", "transformers.modeling_utils",
                     "transformers.configuration_utils", "transformers.trainer", "transformers.training_args",
                     "transformers.pipelines", "transformers.generation", "transformers.optimization"),
    "networkx": ("networkx", "networkx.algorithms"),
    "sympy": ("sympy", "sympy.core", "sympy.functions", "sympy.simplify", "sympy.solvers", "sympy.matrices",
              "sympy.polys", "sympy.integrals", "sympy.series", "sympy.sets", "sympy.logic", "sympy.geometry",
              "sympy.combinatorics", "sympy.ntheory", "sympy.stats", "sympy.physics.units", "sympy.printing"),
    "matplotlib": ("matplotlib", "matplotlib.pyplot", "matplotlib.axes", "matplotlib.figure", "matplotlib.colors",
                   "matplotlib.ticker", "matplotlib.patches", "matplotlib.lines", "matplotlib.text",
                   "matplotlib.transforms", "matplotlib.cm", "matplotlib.dates", "matplotlib.animation",
                   "matplotlib.backend_bases", "matplotlib.collections", "matplotlib.image", "matplotlib.path",
                   "matplotlib.widgets"),
    "scikit-learn": ("sklearn", "sklearn.linear_model", "sklearn.ensemble", "sklearn.cluster", "sklearn.decomposition",
                     "sklearn.preprocessing", "sklearn.metrics", "sklearn.model_selection", "sklearn.neighbors",
                     "sklearn.svm", "sklearn.tree", "sklearn.pipeline", "sklearn.feature_extraction.text",
                     "sklearn.manifold", "sklearn.mixture", "sklearn.naive_bayes", "sklearn.utils", "sklearn.impute",
                     "sklearn.covariance", "sklearn.gaussian_process", "sklearn.neural_network",
                     "sklearn.feature_selection", "sklearn.compose", "sklearn.inspection", "sklearn.calibration",
                     "sklearn.datasets"),
}
"""Modules read per package source (listed explicitly: a package's lazy top level would import everything)."""

MIN_CHARS = 40
MAX_CHARS = 600
EXTRACTION_VERSION = 2
"""Bumped whenever what a source yields changes (part of the cache key of :mod:`icd.data.corpus`)."""


def modules_of(source: str) -> tuple[str, ...]:
    """The modules one source reads; KeyError for an unknown source."""
    return STDLIB_MODULES if source == STDLIB else PACKAGE_MODULES[source]


def first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def docs_of(module_name: str) -> list[str]:
    """First paragraphs of ``module_name``'s docstring and of its public attributes (submodules excepted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return []
        texts = []
        objects = [module] + [getattr(module, name, None) for name in sorted(dir(module)) if not name.startswith("_")]
        for obj in objects:
            if obj is None or (obj is not module and inspect.ismodule(obj)):
                continue
            doc = inspect.getdoc(obj)
            if doc:
                texts.append(first_paragraph(doc))
    return texts


def extract(modules: Sequence[str]) -> list[str]:
    """Distinct first paragraphs of MIN_CHARS..MAX_CHARS characters from ``modules``, sorted."""
    return sorted({t for name in modules for t in docs_of(name) if MIN_CHARS <= len(t) <= MAX_CHARS})


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m icd.data.docstrings SOURCE", file=sys.stderr)
        return 2
    json.dump({"source": argv[0], "texts": extract(modules_of(argv[0]))}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
