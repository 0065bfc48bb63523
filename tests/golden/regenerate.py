"""Write the golden tables of the .test study (exact values as hex floats) for
this numeric platform; see tests/test_golden.py, which encodes a run's tables
with :func:`encode_tables` below. Entries of other platforms in the file are
kept; this platform's entry is replaced.

    python tests/golden/regenerate.py .test/results tests/golden/test_study.json
"""

import json
import sys
from pathlib import Path

import pandas as pd

KEEP = [
    "width",
    "bits",
    "seed",
    "n_weights",
    "n_biases",
    "memory_bits_weights",
    "memory_bits_total",
    "test_error",
    "val_error",
    "direct_test_error",
    "direct_val_error",
    "steps",
    "epochs_run",
    "best_epoch",
]


def encode_tables(results: Path, study: str) -> dict:
    """One study's summary rows (the KEEP columns) and ECR values, floats as hex."""
    s = pd.read_parquet(results / study / "summary.parquet")
    rows = [
        {
            k: ([float(x).hex() for x in v] if k == "steps" else (float(v).hex() if isinstance(v, float) else int(v)))
            for k, v in r._asdict().items()
        }
        for r in s[KEEP].itertuples(index=False)
    ]
    e = pd.read_parquet(results / study / "ecr.parquet")
    return {"summary": rows, "ecr": [float(x).hex() for x in e["ecr"]]}


def main(root: Path, out: Path) -> None:
    from qdesign.nn.numerics import numeric_platform  # noqa: PLC0415

    studies = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("test-"))
    tables = {study: encode_tables(root, study) for study in studies}
    here = numeric_platform()
    entries = json.loads(out.read_text())["platforms"] if out.exists() else []
    entries = [e for e in entries if e["platform"] != here] + [{"platform": here, "tables": tables}]
    out.write_text(json.dumps({"platforms": entries}, indent=1, sort_keys=True) + "\n")
    print(out, sum(len(v["summary"]) for v in tables.values()), "rows for", here)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
