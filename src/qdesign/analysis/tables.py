"""Reading a study's tables, and the one rule for their ``method`` column.

Float rows are not retrained, so their ``method`` is :data:`FLOAT_METHOD`;
quantized rows of tables written before methods were an axis are the
default method's. Every consumer that needs "the method of a row", or "the
rows of the study's primary method" (the one-method figures, the scaling
law), asks here, so the rule exists once. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import TableError
from ..core.precision import is_float_bits
from ..core.registry import DEFAULT_METHOD

FLOAT_METHOD = "float"
"""The ``method`` of float rows in the tables (they are not retrained)."""

MEMORY_COLUMNS = {"weights": "memory_bits_weights", "total": "memory_bits_total"}
"""Which summary column a memory choice ("weights" or "total") reads."""


def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """One Parquet table; a missing or unreadable file is a one-line TableError."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise TableError(f"cannot read {what} {path} ({type(exc).__name__}); rerun the rule that writes it") from None


def read_tables(*paths: str | Path) -> tuple[pd.DataFrame, ...]:
    """Several tables at once (see :func:`read_table`)."""
    return tuple(read_table(p) for p in paths)


def with_method(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a filled ``method`` column: float rows :data:`FLOAT_METHOD`,
    quantized rows without one :data:`~qdesign.core.registry.DEFAULT_METHOD`."""
    df = table.copy()
    if "method" not in df.columns:
        df["method"] = None
    is_float = is_float_bits(df["bits"])
    df["method"] = df["method"].where(df["method"].notna(), np.where(is_float, FLOAT_METHOD, DEFAULT_METHOD))
    return df


def retraining_methods(table: pd.DataFrame) -> list[str]:
    """The retraining methods present in a table, sorted (float excluded)."""
    return sorted(m for m in with_method(table)["method"].unique() if m != FLOAT_METHOD)


def primary_method(table: pd.DataFrame) -> str | None:
    """The study's primary retraining method: the default (``fixed``) when it
    was run, else the first in name order; None for a float-only table."""
    methods = retraining_methods(table)
    if not methods:
        return None
    return DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0]


def primary_method_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the primary method and the float rows (method filled): what
    the one-method figures and the scaling law use."""
    df = with_method(table)
    keep = primary_method(df)
    return df[df["method"].isin([keep, FLOAT_METHOD])]


FLAG_COLUMNS = {"chance_level": "at chance level", "diverged": "diverged"}
"""Columns of a cell's row that say it is no result (qdesign.nn.cells): such cells
stay in the summary, flagged, and are kept out of the ECR and the frontier."""


def flagged(table: pd.DataFrame) -> pd.Series:
    """Per row: whether any flag of :data:`FLAG_COLUMNS` is set (a missing column
    or value: not flagged, as in tables written before the flag existed)."""
    out = pd.Series(False, index=table.index)
    for col in FLAG_COLUMNS:
        if col in table.columns:
            out |= table[col].astype("boolean").fillna(False).astype(bool)
    return out


def flagged_note(table: pd.DataFrame, limit: int = 6) -> str | None:
    """One line naming the flagged cells of a summary (None when there are none)."""
    rows = with_method(table)[flagged(table)] if len(table) else table
    if not len(rows):
        return None
    kinds = [
        f"{int(rows[c].astype('boolean').fillna(False).sum())} {what}" for c, what in FLAG_COLUMNS.items() if c in rows
    ]
    names = [
        f"w{int(r.width)} {'float' if is_float_bits(r.bits) else f'{int(r.bits)}-bit {r.method}'} s{int(r.seed)}"
        for r in rows.itertuples()
    ]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    study = f"{rows['study'].iloc[0]}: " if "study" in rows else ""
    return (
        f"{study}{len(rows)} of {len(table)} cells flagged ({', '.join(k for k in kinds if not k.startswith('0 '))}) "
        f"and kept out of the ECR and the frontier: {', '.join(names[:limit])}{more}"
    )
