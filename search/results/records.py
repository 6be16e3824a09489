"""The report as one JSON file that reads back exactly (``hpsearch report RUN --json FILE``):

    {"schema": {...}, "data": [{"trial": 1, "trial_id": "...", ...}, ...], "summary": {...}}

``schema`` and ``data`` are pandas' Table Schema layout (``orient="table"``), so one call gives the
DataFrame back with its dtypes (Int64, float64, str, UTC datetimes) and every float bit for bit:

    pandas.read_json(FILE, orient="table", precise_float=True)

and ``json.load`` gives ``["data"]`` (one object per trial) and ``["summary"]`` (what
``hpsearch.results.summary.summarize`` returns). Floats are written as Python's ``repr`` (the
shortest text that reads back as the same float; pandas' own ``to_json`` stops at 15 significant
digits), NaN and missing cells as ``null``, ±inf as ``Infinity`` / ``-Infinity`` (as Python's
json module writes and reads them: strict JSON has no infinity), timestamps as ISO-8601 with their
UTC offset. ``precise_float=True`` matters: without it pandas may read the last digit differently.

Also the cell-level helpers every reader of a report row shares: ``cell`` (a cell as plain data)
and ``trial_label`` (how printed text names a trial).
"""

from __future__ import annotations

import json
import math
from typing import Any

READ_CALL = 'pandas.read_json(FILE, orient="table", precise_float=True)'


def cell(value: Any) -> Any:
    """A table cell as plain JSON-ready data: a numpy scalar as its Python value, a timestamp as
    ISO-8601 text, and NaN, NaT, <NA> and None as None. Anything else is returned as it is."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def report_json(table, summary: dict[str, Any]) -> str:
    """The report table and its summary as the JSON text described in this module's docstring."""
    from pandas.io.json import build_table_schema

    schema = build_table_schema(table, index=False)
    rows = [json.dumps({name: cell(value) for name, value in row.items()}, default=str)
            for row in table.to_dict(orient="records")]
    data = "[\n" + ",\n".join(rows) + "\n]" if rows else "[]"    # one trial a line
    return (f'{{"schema": {json.dumps(schema)},\n"data": {data},\n'
            f'"summary": {json.dumps(summary, indent=2, default=str)}}}\n')


def trial_label(row) -> str:
    """How the printed report names a trial: ``#N`` as the live table does, or its Ray id when it
    has no number (decided before Ray made its folder)."""
    number = cell(row["trial"])
    return row["trial_id"] if number is None else f"#{number}"


__all__ = ["READ_CALL", "cell", "report_json", "trial_label"]
