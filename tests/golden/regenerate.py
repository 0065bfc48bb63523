"""Write the golden tables of the .test study (exact values as hex floats) for
this numeric platform; see tests/test_golden.py. Entries of other platforms in
the file are kept; this platform's entry is replaced.

    python tests/golden/regenerate.py .test/results tests/golden/test_study.json
"""

import json
import sys
from pathlib import Path

import pandas as pd

from qdesign.numerics import numeric_platform

root = Path(sys.argv[1])
out = Path(sys.argv[2])
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
tables = {}
for study in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("test-")):
    s = pd.read_parquet(root / study / "summary.parquet")
    rows = []
    for r in s[KEEP].itertuples(index=False):
        d = r._asdict()
        rows.append(
            {
                k: (
                    [float(x).hex() for x in v]
                    if k == "steps"
                    else (float(v).hex() if isinstance(v, float) else int(v))
                )
                for k, v in d.items()
            }
        )
    e = pd.read_parquet(root / study / "ecr.parquet")
    tables[study] = {"summary": rows, "ecr": [float(x).hex() for x in e["ecr"]]}
here = numeric_platform()
entries = json.loads(out.read_text())["platforms"] if out.exists() else []
entries = [e for e in entries if e["platform"] != here] + [{"platform": here, "tables": tables}]
out.write_text(json.dumps({"platforms": entries}, indent=1, sort_keys=True) + "\n")
print(out, sum(len(v["summary"]) for v in tables.values()), "rows for", here)
