"""ONNX export: integer weight initializers behind DequantizeLinear.

Each quantized layer stores its codes as an int8 initializer (int16 above 8
bits), its step as the DequantizeLinear scale and a zero point of 0, so the
weight ONNX Runtime computes is float32(code) * float32(step): bit for bit
the weight of the cell's baked PyTorch model. Float layers (and float cells)
get plain float32 initializers. The graph is built from the op list with
``onnx.helper`` (no torch.onnx tracing); ``onnx`` is imported only here.
"""

from __future__ import annotations

import numpy as np

from . import packed

OPSET = 21  # DequantizeLinear with int16 inputs
INPUT, OUTPUT = "input", "logits"


def _require(name: str):
    """Import an optional ONNX package, or a one-line ExportError that says how to get it."""
    import importlib  # noqa: PLC0415

    from ..core.errors import ExportError  # noqa: PLC0415

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"ONNX export needs the '{name}' package: pip install -r requirements.txt") from None


def build_onnx(ops: list[packed.Op], input_shape, n_classes: int, name: str = "qdesign"):
    """An ``onnx.ModelProto`` of the network, checked by ``onnx.checker``."""
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    nodes, inits = [], []
    h = INPUT
    for i, op in enumerate(ops):
        out = OUTPUT if i == len(ops) - 1 else f"h{i}"
        if op.kind == packed.FLATTEN:
            nodes.append(helper.make_node("Flatten", [h], [out], axis=1))
        elif op.kind == packed.RELU:
            nodes.append(helper.make_node("Relu", [h], [out]))
        elif op.kind in (packed.MAXPOOL, packed.AVGPOOL):
            nodes.append(
                helper.make_node(
                    "MaxPool" if op.kind == packed.MAXPOOL else "AveragePool",
                    [h],
                    [out],
                    kernel_shape=[op.kernel] * 2,
                    strides=[op.stride] * 2,
                )
            )
        else:
            w = f"w{i}"
            if op.quantized:
                dtype = np.int8 if op.bits <= 8 else np.int16
                inits += [
                    numpy_helper.from_array(op.codes.astype(dtype), f"w{i}_codes"),
                    numpy_helper.from_array(np.array(op.step, dtype=np.float32), f"w{i}_scale"),
                    numpy_helper.from_array(np.array(0, dtype=dtype), f"w{i}_zero"),
                ]
                nodes.append(helper.make_node("DequantizeLinear", [f"w{i}_codes", f"w{i}_scale", f"w{i}_zero"], [w]))
            else:
                inits.append(numpy_helper.from_array(op.weight.astype(np.float32), w))
            inits.append(numpy_helper.from_array(op.bias.astype(np.float32), f"b{i}"))
            if op.kind == packed.LINEAR:
                nodes.append(helper.make_node("Gemm", [h, w, f"b{i}"], [out], transB=1))
            else:
                nodes.append(
                    helper.make_node(
                        "Conv",
                        [h, w, f"b{i}"],
                        [out],
                        kernel_shape=list(op.shape[2:]),
                        pads=[op.padding] * 4,
                        strides=[1, 1],
                    )
                )
        h = out
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *map(int, input_shape)])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", int(n_classes)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qdesign")
    model.ir_version = 10  # opset 21's IR version; ONNX Runtime accepts it
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_logits(path, x, batch_size: int = 1024) -> np.ndarray:
    """Run an exported model in ONNX Runtime (CPUExecutionProvider, one thread)."""
    ort = _require("onnxruntime")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = [sess.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0] for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)
