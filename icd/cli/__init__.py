"""The ``icd`` command line: one Typer app, one module of subcommands per stage (``cmd_*.py``)."""
