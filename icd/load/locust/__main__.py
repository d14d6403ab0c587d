"""``python -m icd.load.locust [locust options]``: Locust with icd's locustfile (``-f`` is filled in)."""

from __future__ import annotations

import os
import shutil
import sys

from icd.load.locust import LOCUSTFILE


def main(argv: list[str]) -> int:
    locust = shutil.which("locust", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if locust is None:
        print("icd: error: locust is not installed: pip install 'icd[bench]' (locust==2.47.0)", file=sys.stderr)
        return 2
    os.execv(locust, [locust, "-f", str(LOCUSTFILE), *argv])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
