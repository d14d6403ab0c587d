"""Operations: log and trace analysis, security (checksums, AES-GCM), cost sweeps, correlation compression,
scale-out and TLS proxies (see docs/operations.md, docs/security.md, docs/scaling.md)."""
