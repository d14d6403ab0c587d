"""The optimizer run: stages (calibrate → graph → solve → apply → transform → re-permute → measure → accept),
its artefacts in the run directory, and the comparison of modes (``icd pair``)."""
