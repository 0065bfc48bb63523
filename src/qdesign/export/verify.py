"""Check an exported file against its cell: run it on the raw test pixels (it
normalises them itself) and require the same predictions on every test example
as the cell's PyTorch model, the test error the cell recorded, and the memory
the cell recorded (``metrics.parquet``: ``layer_bits``, ``memory_bits_*``),
which for a packed file fixes its size to the byte."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.constants import FLOAT_BITS
from ..core.errors import CheckpointError, ExportError
from ..core.memory import layer_memory_bits, network_memory_bits
from . import packed
from .cell import Cell, cell_ops, load_cell
from .dataset import normalisation, prepared_for_cell, raw_test_set


@dataclass
class ExportCheck:
    """One export checked on the cell's test set. ``n_differ`` counts test
    examples whose predicted class differs from the cell's PyTorch model;
    ``torch_error`` is that model's error on the given data (the recorded
    error, unless the data are not the cell's). ``expected_bytes``: the packed
    file's size from the memory model of the cell's recorded layer bits;
    ``memory_bits_file``: the memory model of the exported layers, to equal
    the recorded ``memory_bits_total``; ``memory_problem`` says how the
    exported layers differ from the recorded ones (None: they agree)."""

    fmt: str
    path: str
    n_test: int
    recorded_error: float
    torch_error: float
    export_error: float
    n_differ: int
    max_abs_logit_diff: float
    file_bytes: int
    expected_bytes: int | None
    memory_bits_total: int
    memory_bits_file: int | None = None
    memory_problem: str | None = None
    data_path: str = ""
    cell_path: str = ""
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def problem(self) -> str | None:
        """The first reason the export does not reproduce the cell, in one
        line (None: it does)."""
        if self.memory_problem:
            return (
                f"{self.path} does not hold the network the cell recorded: {self.memory_problem} "
                f"(is {self.cell_path}/model.pt damaged or edited?)"
            )
        if self.torch_error != self.recorded_error:
            return (
                f"the cell's own PyTorch model errs {self.torch_error:.4f} on the test set of {self.data_path}, "
                f"it recorded {self.recorded_error:.4f}: these are not the data cell {self.cell_path} was evaluated "
                "on (another dataset file, or digits prepared with another split_seed?), or this machine computes "
                "the network differently"
            )
        if self.n_differ or self.export_error != self.recorded_error:
            return (
                f"{self.path}: {self.n_differ} of {self.n_test} predictions differ from the cell's PyTorch model, "
                f"test error {self.export_error:.4f} vs recorded {self.recorded_error:.4f}"
            )
        if self.expected_bytes is not None and self.file_bytes != self.expected_bytes:
            return (
                f"{self.path} has {self.file_bytes} bytes, the memory model of the cell's recorded layers "
                f"gives {self.expected_bytes}"
            )
        return None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# ------------------------------------------------------------------ the recorded memory


def recorded_layer_bits(cell: Cell) -> list[int] | None:
    """Word length per weight layer as metrics.parquet records it (32: float);
    None for metrics written before the column existed."""
    bits = cell.metrics.get("layer_bits")
    if bits is None or (np.ndim(bits) == 0 and bits != bits):
        return None
    return [int(b) for b in bits]


def _recorded(cell: Cell) -> tuple[int, int]:
    return int(cell.metrics["memory_bits_total"]), int(cell.metrics["memory_bits_weights"])


def _layers_problem(cell: Cell, layers: list[tuple[int, int]], bits: list[int], known_bits: bool):
    """Memory of the exported ``layers`` ((n_weights, n_biases) per weight
    layer) at ``bits`` against the cell's record: (memory_bits_total, problem)."""
    rec_bits = recorded_layer_bits(cell)
    if rec_bits is not None and len(rec_bits) != len(layers):
        return None, f"{len(layers)} weight layers, the cell recorded {len(rec_bits)}"
    if rec_bits is not None and known_bits and bits != rec_bits:
        return None, f"layer bits {bits}, the cell recorded {rec_bits}"
    use = bits if known_bits or rec_bits is None else rec_bits
    mem_w, mem_t = network_memory_bits((w, b, None if lb >= FLOAT_BITS else lb) for (w, b), lb in zip(layers, use))
    rec_t, rec_w = _recorded(cell)
    if (mem_t, mem_w) != (rec_t, rec_w):
        return mem_t, (
            f"its layers hold {mem_t} bits ({mem_w} of weights), the cell recorded memory_bits_total {rec_t} "
            f"({rec_w} of weights)"
        )
    return mem_t, None


def packed_memory(cell: Cell, net: packed.PackedNetwork) -> tuple[int | None, int, str | None]:
    """(memory_bits_file, expected_bytes, problem) of a decoded packed file:
    its layers against the recorded memory, and its size predicted from the
    recorded layer bits (the file's own shapes; the size check then means the
    recorded memory, not the file measured against itself)."""
    weight_ops = [op for op in net.ops if op.kind in (packed.LINEAR, packed.CONV2D)]
    layers = [(op.n_weights, op.shape[0]) for op in weight_ops]
    bits = [op.bits for op in weight_ops]
    mem, problem = _layers_problem(cell, layers, bits, known_bits=True)
    rec_bits = recorded_layer_bits(cell)
    size_bits = rec_bits if rec_bits is not None and len(rec_bits) == len(layers) else bits
    payload = sum(
        -(-layer_memory_bits(w, b, None if lb >= FLOAT_BITS else lb)[1] // 8) for (w, b), lb in zip(layers, size_bits)
    )
    overhead = packed.overhead_bytes(len(net.ops), len(weight_ops), net.input_shape[0], net.version)
    return mem, payload + overhead, problem


def onnx_memory(cell: Cell, path: str | Path) -> tuple[int | None, str | None]:
    """(memory_bits_file, problem) of an exported ONNX model: its weight layers
    (Gemm/Conv, quantized behind DequantizeLinear or float) against the
    recorded layer bits and memory. ONNX stores codes in whole bytes, so a
    quantized layer's bits are the recorded ones, checked against its codes."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types
        raise ExportError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    inits = {t.name: t for t in graph.initializer}
    dequant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    layers, quantized, max_code = [], [], []
    for node in graph.node:
        if node.op_type not in ("Gemm", "Conv"):
            continue
        w, b = node.input[1], node.input[2] if len(node.input) > 2 else ""
        source = inits.get(dequant.get(w, w))
        if source is None or b not in inits:
            return None, f"layer {node.name or w} has no weight or bias initializer"
        arr = numpy_helper.to_array(source)
        layers.append((int(arr.size), int(numpy_helper.to_array(inits[b]).size)))
        quantized.append(w in dequant)
        max_code.append(int(np.abs(arr.astype(np.int64)).max()) if w in dequant and arr.size else 0)
    rec_bits = recorded_layer_bits(cell)
    if rec_bits is None:  # metrics written before layer_bits: the weight and bias counts at least
        got = (sum(w for w, _ in layers), sum(b for _, b in layers))
        want = (int(cell.metrics["n_weights"]), int(cell.metrics["n_biases"]))
        return None, None if got == want else f"{got[0]} weights and {got[1]} biases, the cell recorded {want}"
    if len(rec_bits) == len(layers):
        if quantized != [b < FLOAT_BITS for b in rec_bits]:
            return None, f"quantized layers {quantized}, the cell recorded layer bits {rec_bits}"
        for i, (q, m, lb) in enumerate(zip(quantized, max_code, rec_bits)):
            if q and m > packed.max_level(lb):
                return None, f"layer {i} has code {m}, beyond the {lb}-bit levels the cell recorded"
    return _layers_problem(cell, layers, rec_bits, known_bits=False)


# ------------------------------------------------------------------ logits


def cell_test_data(cell: Cell, data_path: str | Path, payload: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cell's normalised test inputs (float32, N C H W) and labels, as its
    PyTorch model saw them."""
    from ..nn.data import make_splits  # noqa: PLC0415

    spec = cell.model_spec
    payload = payload if payload is not None else prepared_for_cell(cell, data_path)
    split = make_splits(payload, spec["val_fraction"], spec["split_seed"], spec.get("train_subset"))
    return split.x_test.numpy(), split.y_test.numpy()


def torch_logits(cell: Cell, x: np.ndarray) -> np.ndarray:
    """Logits of the cell's PyTorch model, computed as the cell computed its
    test error: its memory layout (:func:`qdesign.nn.train.evaluation_layout`:
    a convolution in NCHW runs another kernel than in channels-last, rounding
    differently), its batches and its forward pass
    (:func:`qdesign.nn.train.logits`)."""
    import torch  # noqa: PLC0415

    from ..nn.train import evaluation_layout, logits  # noqa: PLC0415

    ckpt = cell.checkpoint
    # a quantized cell records the convolutions it ran in NCHW; one retrained before quantized
    # CNNs went channels-last (no record) ran every quantized layer in NCHW
    nchw = ckpt.get("nchw_layers", ckpt.get("codes", {})) if cell.kind == "quantized" else ()
    model = evaluation_layout(cell.model(), nchw)
    return logits(model, torch.from_numpy(x)).numpy()


def _same_normalisation(path, data_path, got, want) -> None:
    gm, gs = (np.asarray(v, dtype=np.float32) for v in got)
    wm, ws = want
    if gm.shape != wm.shape or not (np.array_equal(gm, wm) and np.array_equal(gs, ws)):
        raise ExportError(
            f"{path} normalises its input with mean {gm.tolist()} std {gs.tolist()}, {data_path} with mean "
            f"{wm.tolist()} std {ws.tolist()}: it was exported with another prepared dataset"
        )


def _onnx_normalisation(path):
    import json  # noqa: PLC0415

    import onnx  # noqa: PLC0415

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "qdesign.mean" not in props or "qdesign.std" not in props:
        return None
    return json.loads(props["qdesign.mean"]), json.loads(props["qdesign.std"])


def export_logits(fmt: str, path: str | Path, x_raw: np.ndarray, data_path="", norm=None) -> np.ndarray:
    """Logits of an exported file on raw pixels; with ``norm`` (the dataset's
    mean and std) the file's own normalisation must be that one."""
    if fmt == "packed":
        try:
            net = packed.read_packed(path)
            if net.mean is None:
                net.normalise(x_raw[:0])  # a version 1 file: one line that says what to do
        except packed.PackedFormatError as exc:
            raise ExportError(str(exc)) from None
        if norm is not None:
            _same_normalisation(path, data_path, (net.mean, net.std), norm)
        return net.logits(x_raw)
    from .onnx_export import onnx_logits  # noqa: PLC0415

    if norm is not None:
        stored = _onnx_normalisation(path)
        if stored is not None:
            _same_normalisation(path, data_path, stored, norm)
    return onnx_logits(path, x_raw)


# ------------------------------------------------------------------ the check


def verify_export(
    cell_dir: str | Path,
    path: str | Path,
    data_path: str | Path,
    fmt: str | None = None,
    cell: Cell | None = None,
    torch_out: np.ndarray | None = None,
    payload: dict | None = None,
) -> ExportCheck:
    """Run an exported file on the cell's raw test pixels and compare it with
    the cell.

    ``fmt`` defaults from the suffix (.onnx -> onnx, else packed). Returns an
    :class:`ExportCheck`; its ``ok`` is the pass/fail verdict, its
    ``problem`` the reason. A dataset that is not the cell's (another
    dataset, shape or digits split seed) or a file normalised with another
    dataset's statistics is a one-line error.
    """
    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix == ".onnx" else "packed")
    if not path.is_file():
        raise ExportError(f"exported file not found: {path}")
    cell = cell or load_cell(cell_dir)
    payload = payload if payload is not None else prepared_for_cell(cell, data_path)
    x_raw, y = raw_test_set(payload)
    ref = torch_out if torch_out is not None else torch_logits(cell, cell_test_data(cell, data_path, payload)[0])
    got = export_logits(fmt, path, x_raw, data_path, normalisation(payload))
    if got.shape != ref.shape:
        raise ExportError(f"{path} gives outputs of shape {got.shape}, the cell's model {ref.shape}")
    if fmt == "packed":
        mem, expected, problem = packed_memory(cell, packed.read_packed(path))
    else:
        (mem, problem), expected = onnx_memory(cell, path), None
    ref_pred, got_pred = ref.argmax(axis=1), got.argmax(axis=1)
    n = int(y.shape[0])
    mean, std = normalisation(payload)
    return ExportCheck(
        fmt=fmt,
        path=str(path),
        n_test=n,
        recorded_error=float(cell.metrics["test_error"]),
        torch_error=float((ref_pred != y).sum()) / max(1, n),
        export_error=float((got_pred != y).sum()) / max(1, n),
        n_differ=int((ref_pred != got_pred).sum()),
        max_abs_logit_diff=float(np.abs(got.astype(np.float64) - ref).max()) if n else 0.0,
        file_bytes=path.stat().st_size,
        expected_bytes=expected,
        memory_bits_total=int(cell.metrics["memory_bits_total"]),
        memory_bits_file=mem,
        memory_problem=problem,
        data_path=str(data_path),
        cell_path=str(cell.path),
        mean=mean.tolist(),
        std=std.tolist(),
    )


def check_export(cell_dir: str | Path, path: str | Path, data_path: str | Path, fmt: str | None = None, **kw):
    """:func:`verify_export`, raising a one-line ExportError unless it passes."""
    res = verify_export(cell_dir, path, data_path, fmt, **kw)
    if not res.ok:
        raise ExportError(f"export check failed: {res.problem}")
    return res


def expected_packed_bytes(cell: Cell) -> int:
    """Size of the cell's packed file from the memory model of its recorded
    layer bits and its network's layer shapes: per weight layer
    ``ceil(memory_bits_total / 8)`` (:func:`qdesign.core.memory.layer_memory_bits`),
    plus :func:`qdesign.export.packed.overhead_bytes`."""
    ops = cell_ops(cell)
    weight_ops = [op for op in ops if op.kind in (packed.LINEAR, packed.CONV2D)]
    bits = recorded_layer_bits(cell) or [op.bits for op in weight_ops]
    payload = sum(
        -(-layer_memory_bits(op.n_weights, op.shape[0], None if b >= FLOAT_BITS else b)[1] // 8)
        for op, b in zip(weight_ops, bits)
    )
    return payload + packed.overhead_bytes(len(ops), len(weight_ops), cell.input_shape[0])


__all__ = [
    "CheckpointError",
    "ExportCheck",
    "cell_test_data",
    "check_export",
    "expected_packed_bytes",
    "onnx_memory",
    "packed_memory",
    "recorded_layer_bits",
    "torch_logits",
    "verify_export",
]
