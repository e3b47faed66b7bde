"""Tables on a terminal, for the `aifactory` command and the operators' `aifactory-admin`
(needs the `cli` extra: rich).

A table is printed with each column at least as wide as its longest word: a terminal too
narrow for the table wraps a cell between words, and never cuts a job name, a key id or a
time short. Output that goes to a file or a pipe (and no COLUMNS says otherwise) is not
wrapped to a terminal's width at all.
"""

import os

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

# Wider than any table: output that goes to a file or a pipe is not wrapped to a terminal.
REDIRECTED_WIDTH = 10_000


def new_console(*, highlight: bool = False) -> Console:
    """A console on the stdout of the moment (a test runner's too): make one per command."""
    console = Console(highlight=highlight, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = REDIRECTED_WIDTH
    return console


def print_table(console: Console, table: Table) -> None:
    """Print a table whose columns are each at least as wide as their longest word; lines
    wider than the terminal are left whole."""
    unlimited = console.options.update_width(REDIRECTED_WIDTH)
    for column in table.columns:
        widest = max(
            (Measurement.get(console, unlimited, cell).minimum for cell in column.cells),
            default=0,
        )
        header = Measurement.get(console, unlimited, column.header).minimum
        column.min_width = max(widest, header, column.min_width or 0)
    console.print(table, crop=False)
