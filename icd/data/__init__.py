"""Text for calibration and evaluation: Python standard-library docstrings (real English, no download)."""
