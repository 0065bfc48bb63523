"""The memory claim as real bytes: train a reference-sized MNIST cell, export
it packed and as ONNX, and check both against the cell.

Trains an FCDNN (3 hidden layers of 512 units) for a few float epochs, retrains
it at 3 bits for one epoch, then prints the exported file sizes against the
memory model and the recorded / packed-reader / ONNX Runtime test errors (both
files run on the raw uint8 test pixels and normalise them themselves) with the
number of predictions that differ from PyTorch's. About 2-3 minutes on one
core.

    python benchmarks/export_check.py [--data-dir ../shared/data] [--bits 3] [--epochs 3] [--out DIR]

Needs MNIST in torchvision's layout (MNIST/raw) under ``--data-dir``; it does
not download.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from qdesign.core.config import validate_config
from qdesign.core.specs import float_spec, quant_spec
from qdesign.export import export_cell
from qdesign.export.cell import load_cell
from qdesign.export.verify import cell_test_data, torch_logits, verify_export
from qdesign.nn.cells import retrain, train_float
from qdesign.nn.data import prepare_dataset, write_prepared

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3, help="float training epochs (retraining: 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the cell and exports here (default: a temp dir)")
    args = ap.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="qdesign-export-"))
    out.mkdir(parents=True, exist_ok=True)
    study = {
        "dataset": "mnist",
        "model": {"type": "fcdnn", "depth": 3, "widths": [args.width]},
        "bits": [args.bits],
        "seeds": [0],
        "training": {"epochs": args.epochs, "lr": 0.001, "batch_size": 128},
        "retraining": {"epochs": 1, "lr": 0.0001, "batch_size": 128},
    }
    cfg = validate_config({"device": "cpu", "studies": {"mnist-fcdnn": study}})
    data = out / "mnist.pt"
    t0 = time.perf_counter()
    write_prepared(prepare_dataset("mnist", args.data_dir, download=False), data)
    train_float(float_spec(cfg, "mnist-fcdnn", args.width, 0), data, out / "float", threads=args.threads)
    qdir = out / f"q{args.bits}"
    retrain(
        quant_spec(cfg, "mnist-fcdnn", args.width, args.bits, 0),
        data,
        out / "float" / "model.pt",
        qdir,
        threads=args.threads,
    )
    t_train = time.perf_counter() - t0

    cell = load_cell(qdir)
    x, _ = cell_test_data(cell, data)
    ref = torch_logits(cell, x)
    results = {}
    for fmt, suffix in (("packed", ".qdpk"), ("onnx", ".onnx")):
        t = time.perf_counter()
        path = export_cell(qdir, fmt, out / f"mnist_fcdnn_w{args.width}_b{args.bits}{suffix}", data, force=True)
        t_export = time.perf_counter() - t
        t = time.perf_counter()
        res = verify_export(qdir, path, data, fmt, cell=cell, torch_out=ref)
        results[fmt] = {**res.as_dict(), "export_seconds": t_export, "verify_seconds": time.perf_counter() - t}
    # the float network, for scale
    fcell = load_cell(out / "float")
    fref = torch_logits(fcell, x)
    for fmt, suffix in (("packed", ".qdpk"), ("onnx", ".onnx")):
        path = export_cell(out / "float", fmt, out / f"mnist_fcdnn_w{args.width}_float{suffix}", data, force=True)
        results[f"float_{fmt}"] = verify_export(out / "float", path, data, fmt, cell=fcell, torch_out=fref).as_dict()

    m = cell.metrics
    print(
        f"\nMNIST FCDNN 3x{args.width}, {args.bits} bits ({args.epochs} float epochs + 1 retraining epoch, "
        f"{t_train:.0f}s to train), {m['n_weights']} weights, {m['n_biases']} biases"
    )
    print(
        f"memory model: memory_bits_total = {m['memory_bits_total']} bits = {m['memory_bits_total'] / 8:.0f} bytes "
        f"(weights only {m['memory_bits_weights'] / 8:.0f} bytes)"
    )
    p, o = results["packed"], results["onnx"]
    print(
        f"packed file : {p['file_bytes']} bytes (expected {p['expected_bytes']}: per-layer ceil(bits/8) + "
        f"{p['expected_bytes'] - sum(-(-b // 8) for b in _layer_bits(cell))} bytes header/normalisation/records/CRC)"
    )
    print(f"onnx file   : {o['file_bytes']} bytes (int8 codes, one byte per weight, + protobuf)")
    fp, fo = results["float_packed"], results["float_onnx"]
    print(
        f"float cell  : memory model {fp['memory_bits_total'] / 8:.0f} bytes; packed {fp['file_bytes']} bytes "
        f"(expected {fp['expected_bytes']}), onnx {fo['file_bytes']} bytes"
    )
    print(f"{'':12s} {'test error':>10s} {'differ':>7s} {'max|dlogit|':>12s}")
    print(f"{'recorded':12s} {m['test_error']:10.4f}")
    print(f"{'torch now':12s} {p['torch_error']:10.4f}")
    for name, r in (("packed", p), ("onnx", o), ("float packed", fp), ("float onnx", fo)):
        print(
            f"{name:12s} {r['export_error']:10.4f} {r['n_differ']:7d} {r['max_abs_logit_diff']:12.3g}"
            f"  ({'ok' if r['ok'] else 'MISMATCH'}, recorded {r['recorded_error']:.4f})"
        )
    (out / "export_check.json").write_text(json.dumps(results, indent=2))
    print(f"outputs in {out}")
    return 0 if all(r["ok"] for r in results.values()) else 1


def _layer_bits(cell) -> list[int]:
    from qdesign.core.memory import layer_memory_bits
    from qdesign.export import packed
    from qdesign.export.cell import cell_ops

    return [
        layer_memory_bits(op.n_weights, op.shape[0], op.bits)[1]
        for op in cell_ops(cell)
        if op.kind in (packed.LINEAR, packed.CONV2D)
    ]


if __name__ == "__main__":
    raise SystemExit(main())
