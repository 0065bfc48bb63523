"""ONNX export: raw pixels in, normalised inside the graph, integer weight
initializers behind DequantizeLinear.

The graph's input ``input`` is the raw image as stored in the prepared dataset
(uint8, N x C x H x W); its first nodes compute ``(float32(x) - mean) / std``
per channel (Cast, Sub, Div: the two roundings PyTorch made when it normalised
the cell's data), so a user needs no other file. The normalisation is also in
the model's metadata (``qdesign.mean``, ``qdesign.std``).

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


def build_onnx(ops: list[packed.Op], input_shape, n_classes: int, mean, std, name: str = "qdesign", metadata=None):
    """An ``onnx.ModelProto`` of the network on raw uint8 pixels (normalised by
    ``mean``/``std``, one per channel, inside the graph), checked by
    ``onnx.checker``. ``metadata``: extra string entries for ``metadata_props``."""
    import json  # noqa: PLC0415

    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    channels = int(input_shape[0])
    m32, s32 = packed.check_normalisation(mean, std, channels)
    inits = [
        numpy_helper.from_array(m32.astype(np.float32).reshape(1, channels, 1, 1), "input_mean"),
        numpy_helper.from_array(s32.astype(np.float32).reshape(1, channels, 1, 1), "input_std"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT], ["input_float"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["input_float", "input_mean"], ["input_centred"]),
        helper.make_node("Div", ["input_centred", "input_std"], ["input_normalised"]),
    ]
    h = "input_normalised"
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
    x_info = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", *map(int, input_shape)])
    x_info.doc_string = "raw pixels as stored in the prepared dataset (uint8, N x C x H x W); normalised in the graph"
    graph = helper.make_graph(
        nodes,
        name,
        [x_info],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", int(n_classes)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qdesign")
    model.ir_version = 10  # opset 21's IR version; ONNX Runtime accepts it
    props = {
        "qdesign.input": "uint8 raw pixels, N x C x H x W; the graph computes (x - mean) / std per channel",
        "qdesign.mean": json.dumps([float(v) for v in m32]),
        "qdesign.std": json.dumps([float(v) for v in s32]),
        **{str(k): str(v) for k, v in (metadata or {}).items()},
    }
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_logits(path, x, batch_size: int = 1024) -> np.ndarray:
    """Run an exported model in ONNX Runtime (CPUExecutionProvider, one thread)
    on raw uint8 pixels ``x`` (N, C, H, W)."""
    from ..core.errors import ExportError  # noqa: PLC0415

    ort = _require("onnxruntime")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(f"{path} is not an ONNX model ONNX Runtime can load ({type(exc).__name__})") from None
    kind = sess.get_inputs()[0].type
    if kind != "tensor(uint8)":
        raise ExportError(
            f"{path} takes {kind} inputs, not raw uint8 pixels (exported before the graph normalised its input?): "
            "export the cell again"
        )
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"the ONNX model takes raw uint8 pixels, got {x.dtype}")
    x = np.ascontiguousarray(x)
    outs = [sess.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0] for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)
