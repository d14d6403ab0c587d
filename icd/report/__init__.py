"""HTML reports shared by every stage: tables, text, matplotlib figures embedded as PNG (works offline)."""
