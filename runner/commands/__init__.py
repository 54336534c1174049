"""The ``colabrun`` command and what its subcommands show.

cli, chaos, doctor, logs, plots, report.
"""
