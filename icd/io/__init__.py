"""Plain-file artefact I/O: atomic writes, JSON helpers, sha256."""
