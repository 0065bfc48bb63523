"""Export: the packed bit format, its size against the memory model, exact
inference of the NumPy reader, ONNX Runtime agreement, and bad requests."""

import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qdesign.analysis.ecr import network_memory_bits
from qdesign.core.config import validate_config
from qdesign.core.errors import CheckpointError, ExportError
from qdesign.core.specs import float_spec, quant_spec
from qdesign.export import export_cell, packed
from qdesign.export.cell import cell_ops, load_cell
from qdesign.export.verify import check_export, expected_packed_bytes, verify_export
from qdesign.nn.cells import retrain, train_float
from qdesign.nn.data import prepare_dataset, write_prepared
from qdesign.nn.models import weight_layers

from .conftest import REPO, tiny_study

CNN = {
    "type": "cnn",
    "channel_multipliers": [1, 2],
    "convs_per_block": 1,
    "kernel_size": 3,
    "pool": "max",
    "fc_units": 16,
    "widths": [4],
}
AVG_CNN = {**CNN, "pool": "avg", "fc_units": 0}


# ------------------------------------------------------------------ bit packing


@st.composite
def codes_and_bits(draw):
    bits = draw(st.integers(1, packed.MAX_PACKED_BITS))
    k = packed.max_level(bits)
    n = draw(st.integers(0, 97))
    if bits == 1:
        codes = draw(st.lists(st.sampled_from([-1, 1]), min_size=n, max_size=n))
    else:
        codes = draw(
            st.one_of(
                st.lists(st.integers(-k, k), min_size=n, max_size=n),
                st.lists(st.sampled_from([-k, 0, k]), min_size=n, max_size=n),
            )
        )
    return np.array(codes, dtype=np.int64), bits


@settings(max_examples=300, deadline=None)
@given(codes_and_bits())
def test_pack_unpack_round_trip(cb):
    codes, bits = cb
    data = packed.pack_codes(codes, bits)
    assert len(data) == packed.packed_code_bytes(codes.size, bits) == -(-codes.size * bits // 8)
    assert np.array_equal(packed.unpack_codes(data, codes.size, bits), codes)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 7, 8, 13, 64])
def test_pack_extremes_and_zeros(bits, n):
    k = packed.max_level(bits)
    fills = [-k, k] if bits == 1 else [-k, 0, k]
    for value in fills:
        codes = np.full(n, value)
        assert np.array_equal(packed.unpack_codes(packed.pack_codes(codes, bits), n, bits), codes)
    alternating = np.resize([-k, k], n)
    assert np.array_equal(packed.unpack_codes(packed.pack_codes(alternating, bits), n, bits), alternating)


def test_bit_layout_is_lsb_first_across_bytes():
    # 2 bits, four per byte: codes -1, 0, 1, 1 -> offsets 0, 1, 2, 2 -> 0b10_10_01_00
    assert packed.pack_codes([-1, 0, 1, 1], 2) == bytes([0b10100100])
    # 3 bits (K = 3): offsets 6, 1, 5 -> stream 011 100 101 (LSB first) -> bytes 0x4E, 0x01
    assert packed.pack_codes([3, -2, 2], 3) == bytes([0b01001110, 0b00000001])
    # 1 bit: -1 -> 0, +1 -> 1
    assert packed.pack_codes([1, -1, 1, 1, -1, -1, -1, -1, 1], 1) == bytes([0b00001101, 0b1])
    # 8 bits: offset 127 + code, one byte each
    assert packed.pack_codes([-127, 0, 127], 8) == bytes([0, 127, 254])


def test_packing_rejects_invalid_codes_and_bits():
    with pytest.raises(packed.PackedFormatError, match="-1..1"):
        packed.pack_codes([2], 2)
    with pytest.raises(packed.PackedFormatError, match="-1 or \\+1"):
        packed.pack_codes([0], 1)
    for bits in (0, 17, 32):
        with pytest.raises(packed.PackedFormatError, match="1..16"):
            packed.pack_codes([0], bits)
    with pytest.raises(packed.PackedFormatError, match="invalid 2-bit code"):
        packed.unpack_codes(bytes([0b11]), 1, 2)  # offset 3 > 2K
    with pytest.raises(packed.PackedFormatError, match="padding"):
        packed.unpack_codes(bytes([0b100]), 1, 2)
    with pytest.raises(packed.PackedFormatError, match="need 1 bytes"):
        packed.unpack_codes(b"\0\0", 3, 2)


# ------------------------------------------------------------------ tiny cells


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Tiny trained digits cells: {name: cell dir}, plus the data file."""
    root = tmp_path_factory.mktemp("cells")
    data = root / "digits.pt"
    write_prepared(prepare_dataset("digits"), data)
    out = {"data": data}
    for name, model, bits, retraining in (
        ("fcdnn", None, (1, 2, 3, 8), {}),
        ("cnn", CNN, (3,), {}),
        ("avgcnn", AVG_CNN, (2,), {}),
        ("mixed", None, (2,), {"epochs": 1, "float_first": True, "float_last": True}),
    ):
        study = tiny_study(**({"model": model} if model else {}), **({"retraining": retraining} if retraining else {}))
        cfg = validate_config({"device": "cpu", "studies": {"s": study}})
        width = study["model"]["widths"][0]
        train_float(float_spec(cfg, "s", width, 0), data, root / name / "f")
        out[f"{name}-float"] = root / name / "f"
        for b in bits:
            retrain(quant_spec(cfg, "s", width, b, 0), data, root / name / "f" / "model.pt", root / name / f"q{b}")
            out[f"{name}-{b}"] = root / name / f"q{b}"
    return out


QUANT_CELLS = ["fcdnn-1", "fcdnn-2", "fcdnn-3", "fcdnn-8", "cnn-3", "avgcnn-2", "mixed-2"]


@pytest.mark.parametrize("name", QUANT_CELLS + ["fcdnn-float", "cnn-float"])
def test_packed_size_is_the_memory_model(cells, tmp_path, name):
    cell = load_cell(cells[name])
    path = export_cell(cells[name], "packed", tmp_path / "net.qdpk")
    ops = cell_ops(cell)
    weight_ops = [op for op in ops if op.kind in (packed.LINEAR, packed.CONV2D)]
    # per-layer memory model (b bits/weight + 32-bit step, or 32 bits/weight; 32-bit biases)
    model = cell.model()
    layer_bits = [op.bits if op.quantized else None for op in weight_ops]
    per_layer = [network_memory_bits([(w, b, lb)])[1] for (_, w, b), lb in zip(weight_layers(model), layer_bits)]
    assert sum(per_layer) == cell.metrics["memory_bits_total"]
    overhead = 16 + 4 * len(ops) + 16 * len(weight_ops) + 4
    assert overhead == packed.overhead_bytes(len(ops), len(weight_ops))
    expected = sum(-(-t // 8) for t in per_layer) + overhead
    assert path.stat().st_size == expected == expected_packed_bytes(cell)
    if name.startswith("mixed"):
        assert [op.quantized for op in weight_ops] == [False, True, False]


@pytest.mark.parametrize("name", QUANT_CELLS + ["fcdnn-float", "cnn-float"])
def test_packed_reader_reproduces_the_cell_exactly(cells, tmp_path, name):
    path = export_cell(cells[name], "packed", tmp_path / "net.qdpk")
    res = verify_export(cells[name], path, cells["data"])
    assert res.n_differ == 0, res
    assert res.export_error == res.recorded_error == res.torch_error
    assert res.max_abs_logit_diff < 1e-4 and res.ok
    net = packed.read_packed(path)
    cell = load_cell(cells[name])
    for op, ref in zip(net.ops, cell_ops(cell)):
        assert op.kind == ref.kind
        if op.kind in (packed.LINEAR, packed.CONV2D):
            assert np.array_equal(op.weight, ref.weight) and np.array_equal(op.bias, ref.bias)
            assert op.bits == ref.bits and (not op.quantized or np.array_equal(op.codes, ref.codes))


@pytest.mark.parametrize("name", ["fcdnn-2", "fcdnn-8", "cnn-3", "avgcnn-2", "mixed-2", "fcdnn-float", "cnn-float"])
def test_onnx_runtime_agrees_with_pytorch(cells, tmp_path, name):
    import onnx

    path = export_cell(cells[name], "onnx", tmp_path / "net.onnx")
    res = check_export(cells[name], path, cells["data"])
    assert res.n_differ == 0 and res.export_error == res.recorded_error
    model = onnx.load(str(path))
    n_dq = sum(node.op_type == "DequantizeLinear" for node in model.graph.node)
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    if name.endswith("float"):
        assert n_dq == 0 and not int8
    else:
        n_quant = len(load_cell(cells[name]).checkpoint["codes"])
        assert n_dq == len(int8) == n_quant


def test_reader_runs_without_torch(cells, tmp_path):
    path = export_cell(cells["cnn-3"], "packed", tmp_path / "net.qdpk")
    code = (
        "import sys, numpy as np; from qdesign.export.packed import read_packed; "
        f"net = read_packed({str(path)!r}); p = net.predict(np.zeros((3, *net.input_shape), np.float32)); "
        "assert p.shape == (3,); assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


# ------------------------------------------------------------------ bad input


def test_missing_or_corrupt_cell(cells, tmp_path):
    out = tmp_path / "out.qdpk"
    with pytest.raises(CheckpointError, match="cell directory not found"):
        export_cell(tmp_path / "nope", "packed", out)
    half = tmp_path / "half"
    half.mkdir()
    with pytest.raises(CheckpointError, match="no metrics.parquet"):
        export_cell(half, "packed", out)
    bad = tmp_path / "bad"
    shutil.copytree(cells["fcdnn-2"], bad)
    (bad / "model.pt").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        export_cell(bad, "onnx", out)
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


def _edited_cell(src, dst, edit):
    shutil.copytree(src, dst)
    ckpt = torch.load(dst / "model.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst / "model.pt")
    return dst


def test_bad_export_requests(cells, tmp_path):
    out = tmp_path / "out.bin"
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_cell(cells["fcdnn-2"], "tflite", out)
    with pytest.raises(ExportError, match="is a directory"):
        export_cell(cells["fcdnn-2"], "packed", tmp_path)
    wide = _edited_cell(cells["fcdnn-2"], tmp_path / "wide", lambda c: next(iter(c["codes"].values())).update(bits=20))
    with pytest.raises(ExportError, match="20-bit weights; export supports 1..16"):
        export_cell(wide, "packed", out)

    def break_codes(c):
        c["codes"]["1"]["codes"] = -c["codes"]["1"]["codes"]

    broken = _edited_cell(cells["fcdnn-2"], tmp_path / "broken", break_codes)
    with pytest.raises(CheckpointError, match="codes x step differ"):
        export_cell(broken, "packed", out)
    assert not out.exists()


def test_corrupt_packed_file_is_reported(cells, tmp_path):
    path = export_cell(cells["fcdnn-3"], "packed", tmp_path / "net.qdpk")
    data = bytearray(path.read_bytes())
    flipped = data.copy()
    flipped[40] ^= 0xFF
    (tmp_path / "flip.qdpk").write_bytes(bytes(flipped))
    with pytest.raises(packed.PackedFormatError, match="CRC mismatch"):
        packed.read_packed(tmp_path / "flip.qdpk")
    (tmp_path / "magic.qdpk").write_bytes(b"XXXX" + bytes(data[4:]))
    with pytest.raises(packed.PackedFormatError, match="bad magic"):
        packed.read_packed(tmp_path / "magic.qdpk")
    body = bytes(data[:-4])[:-10]  # truncated, with a valid CRC
    (tmp_path / "short.qdpk").write_bytes(body + zlib.crc32(body).to_bytes(4, "little"))
    with pytest.raises(packed.PackedFormatError, match="truncated"):
        packed.read_packed(tmp_path / "short.qdpk")
    with pytest.raises(ExportError, match="CRC mismatch"):
        verify_export(cells["fcdnn-3"], tmp_path / "flip.qdpk", cells["data"])


# ------------------------------------------- the reference logits of verification

CNN_CPU = {"type": "cnn", "channel_multipliers": [1, 2], "convs_per_block": 1, "kernel_size": 3, "pool": "max"}


@pytest.mark.parametrize("kind", ["quantized", "float", "float-first", "nchw-quantized"])
def test_verification_logits_are_the_cells_own(kind):
    """What a cell computed its test error with and what verification compares
    an export against are one computation, bit for bit: a width-32 CNN (its
    32->64 convolution rounds differently in channels-last than in NCHW, so
    a verification run in the other layout would show), 300 images (two full
    batches and a partial one). ``nchw-quantized``: a cell retrained before
    quantized CNNs went channels-last (NCHW quantized convolutions, no
    ``nchw_layers`` in its checkpoint)."""
    from qdesign.export.cell import Cell
    from qdesign.export.verify import torch_logits
    from qdesign.nn.data import Splits
    from qdesign.nn.models import build_model
    from qdesign.nn.train import evaluate, evaluation_layout, logits, nchw_layers, use_channels_last
    from qdesign.quantize import bake, integer_codes, to_quantized

    torch.manual_seed(3)
    model = build_model(CNN_CPU, 32, (1, 28, 28), 10)
    x = torch.randn(300, 1, 28, 28)
    y = torch.randint(0, 10, (300,))
    data = use_channels_last(model, Splits(x, y, x, y, x, y, 10))  # as a cell holds model and data
    spec = {"model": CNN_CPU, "width": 32}
    common = {"input_shape": (1, 28, 28), "n_classes": 10}
    if kind == "float":
        net = model
        ckpt = {"kind": "float", "spec": spec, "state_dict": model.state_dict(), **common}
    else:
        net = to_quantized(model, 8, float_first=kind == "float-first")
        codes = {n: {"codes": q.codes, "step": q.step, "bits": q.bits} for n, q in integer_codes(net).items()}
        ckpt = {"kind": "quantized", "float_spec": spec, "state_dict": bake(net).state_dict(), "codes": codes, **common}
        if kind == "nchw-quantized":
            evaluation_layout(net, codes)  # as to_quantized made them before: NCHW
            assert nchw_layers(net) == ["0", "3"]
        else:
            ckpt["nchw_layers"] = nchw_layers(net)  # as the cell records it (none)
    want = logits(net, data.x_test)
    error = float((want.argmax(1) != y).sum()) / 300
    assert evaluate(net, data.x_test, y) == error  # logits() is evaluate's computation
    got = torch_logits(Cell(REPO, ckpt, {}), x.numpy())
    assert np.array_equal(got, want.numpy())
