"""The packed binary format: b-bit integer weights as real bytes, and a
NumPy-only reader that runs the network.

This module imports NumPy only (no torch), so a deployment tool or a test on a
machine without PyTorch can read and run a packed file. The layout is
specified in ``docs/export.md``; in short (all integers little-endian)::

    header   16 bytes  magic b"QDPK", u16 version, u16 n_ops, u16 n_classes,
                       u16 C, u16 H, u16 W
    ops      n_ops records, in forward order; each starts with 4 bytes
                       u8 op, u8 a, u8 b, u8 0
             weight ops (LINEAR, CONV2D) follow with
                       u32 out, u32 in, u32 kh, u32 kw          (16 bytes)
                       f32 step                (quantized layers only)
                       ceil(n_weights * bits / 8) bytes of codes (bits <= 16),
                         or n_weights f32 (float layers, bits = 32)
                       out f32 biases
    trailer  u32 CRC-32 of everything before it

Codes are stored as unsigned offsets ``u = code + K`` (K = 2**(b-1) - 1) for
b >= 2 and ``u = (code + 1) / 2`` for b = 1 (codes {-1, +1}), packed LSB first
into one continuous bit stream (code i occupies stream bits [i*b, (i+1)*b);
stream bit j is bit j % 8 of byte j // 8), padded with zero bits to a byte.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"QDPK"
VERSION = 1
HEADER = struct.Struct("<4sHHHHHH")  # 16 bytes
OP = struct.Struct("<BBBB")  # 4 bytes
SHAPE = struct.Struct("<IIII")  # 16 bytes
TRAILER_BYTES = 4
FLOAT_BITS = 32  # qdesign.core.constants.FLOAT_BITS; not imported to keep this module standalone
MAX_PACKED_BITS = 16

FLATTEN, RELU, MAXPOOL, AVGPOOL, LINEAR, CONV2D = range(6)
OP_NAMES = {
    FLATTEN: "flatten",
    RELU: "relu",
    MAXPOOL: "maxpool",
    AVGPOOL: "avgpool",
    LINEAR: "linear",
    CONV2D: "conv2d",
}
_WEIGHT_OPS = (LINEAR, CONV2D)


class PackedFormatError(ValueError):
    """A file that is not a valid packed network, or a layer it cannot hold."""


# --------------------------------------------------------------------------- codes


def max_level(bits: int) -> int:
    """K: codes lie in -K..K (b >= 2) or {-1, +1} (b = 1)."""
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def _check_bits(bits: int) -> int:
    if not 1 <= int(bits) <= MAX_PACKED_BITS:
        raise PackedFormatError(
            f"the packed format holds 1..{MAX_PACKED_BITS}-bit codes or 32-bit floats, not {bits} bits"
        )
    return int(bits)


def packed_code_bytes(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits take: ceil(n * bits / 8)."""
    return (int(n) * int(bits) + 7) // 8


def pack_codes(codes, bits: int) -> bytes:
    """Signed integer codes -> the packed bit stream (see the module docstring)."""
    bits = _check_bits(bits)
    c = np.asarray(codes).reshape(-1).astype(np.int64)
    k = max_level(bits)
    if bits == 1:
        if c.size and not np.all((c == 1) | (c == -1)):
            raise PackedFormatError("1-bit codes must be -1 or +1")
        u = (c + 1) // 2
    else:
        if c.size and (c.min() < -k or c.max() > k):
            raise PackedFormatError(f"{bits}-bit codes must lie in -{k}..{k}, got {c.min()}..{c.max()}")
        u = c + k
    bit_matrix = ((u[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, n: int, bits: int) -> np.ndarray:
    """The packed bit stream -> ``n`` signed codes (int16), checking that every
    code is a valid level and the padding bits are zero."""
    bits = _check_bits(bits)
    if len(data) != packed_code_bytes(n, bits):
        raise PackedFormatError(f"{n} {bits}-bit codes need {packed_code_bytes(n, bits)} bytes, got {len(data)}")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if stream[n * bits :].any():
        raise PackedFormatError("non-zero padding bits after the codes")
    u = stream[: n * bits].reshape(n, bits).astype(np.int32) @ (1 << np.arange(bits, dtype=np.int32))
    k = max_level(bits)
    if bits == 1:
        return (2 * u - 1).astype(np.int16)
    if u.size and u.max() > 2 * k:
        raise PackedFormatError(f"invalid {bits}-bit code (offset {u.max()} > {2 * k})")
    return (u - k).astype(np.int16)


# --------------------------------------------------------------------------- network


@dataclass
class Op:
    """One step of the forward pass. Weight ops carry ``weight`` (float32, the
    dequantized value for quantized layers), ``codes``/``step`` (quantized
    layers) and ``bias``; ``bits`` is 32 for a float layer. Pools carry
    ``kernel``/``stride``, convolutions ``padding``."""

    kind: int
    bits: int = 0
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    shape: tuple[int, ...] = ()
    codes: np.ndarray | None = None
    step: float | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None

    @property
    def quantized(self) -> bool:
        return self.kind in _WEIGHT_OPS and self.bits < FLOAT_BITS

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape)) if self.kind in _WEIGHT_OPS else 0


def layer_payload_bytes(n_weights: int, n_biases: int, bits: int) -> int:
    """Payload bytes of one weight layer: ceil(memory_bits_total / 8) of the
    memory model (b-bit codes + one f32 step + f32 biases, or f32 weights + f32
    biases for a float layer)."""
    if bits >= FLOAT_BITS:
        return 4 * (int(n_weights) + int(n_biases))
    return packed_code_bytes(n_weights, bits) + 4 + 4 * int(n_biases)


def overhead_bytes(n_ops: int, n_weight_ops: int) -> int:
    """Bytes of the file that are not the memory model's weights, steps and
    biases: header, op records, weight shapes and the CRC trailer."""
    return HEADER.size + OP.size * int(n_ops) + SHAPE.size * int(n_weight_ops) + TRAILER_BYTES


def _op_args(op: Op) -> tuple[int, int]:
    if op.kind in _WEIGHT_OPS:
        return op.bits, op.padding
    if op.kind in (MAXPOOL, AVGPOOL):
        return op.kernel, op.stride
    return 0, 0


def encode(ops: list[Op], input_shape: tuple[int, int, int], n_classes: int) -> bytes:
    """The bytes of a packed file (see the module docstring)."""
    if len(input_shape) != 3:
        raise PackedFormatError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    for v in (len(ops), n_classes, *input_shape):
        if not 0 <= int(v) < 2**16:
            raise PackedFormatError(f"header value {v} does not fit in 16 bits")
    parts = [HEADER.pack(MAGIC, VERSION, len(ops), int(n_classes), *(int(v) for v in input_shape))]
    for op in ops:
        a, b = _op_args(op)
        if op.kind not in OP_NAMES or not (0 <= a < 256 and 0 <= b < 256):
            raise PackedFormatError(f"cannot encode op {op.kind} with arguments {a}, {b}")
        parts.append(OP.pack(op.kind, a, b, 0))
        if op.kind not in _WEIGHT_OPS:
            continue
        out_f, in_f, kh, kw = (*op.shape, 1, 1) if op.kind == LINEAR else op.shape
        parts.append(SHAPE.pack(out_f, in_f, kh, kw))
        if op.quantized:
            parts.append(struct.pack("<f", op.step))
            parts.append(pack_codes(op.codes, op.bits))
        elif op.bits == FLOAT_BITS:
            parts.append(np.ascontiguousarray(op.weight, dtype="<f4").tobytes())
        else:
            raise PackedFormatError(f"a layer has {op.bits} bits: 1..{MAX_PACKED_BITS} or {FLOAT_BITS}")
        bias = np.asarray(op.bias, dtype="<f4").reshape(-1)
        if bias.size != out_f:
            raise PackedFormatError(f"a layer has {bias.size} biases for {out_f} outputs")
        parts.append(bias.tobytes())
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def write_packed(path: str | Path, ops: list[Op], input_shape, n_classes: int) -> Path:
    """Write a packed file (not atomically; :func:`qdesign.export.export_cell` does that)."""
    path = Path(path)
    path.write_bytes(encode(ops, tuple(input_shape), n_classes))
    return path


@dataclass
class PackedNetwork:
    """A decoded packed file: the op list and what the input must look like."""

    input_shape: tuple[int, int, int]
    n_classes: int
    ops: list[Op] = field(default_factory=list)
    version: int = VERSION

    def logits(self, x, batch_size: int = 1024) -> np.ndarray:
        """Forward pass in float64 on normalised inputs (N, C, H, W).

        Weights are exactly the float32 values of PyTorch's baked model
        (float32(code) * float32(step)); float64 accumulation makes the result
        independent of summation order to far below float32 resolution.
        """
        x = np.asarray(x)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"input must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        outs = [self._forward(x[i : i + batch_size].astype(np.float64)) for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.n_classes))

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        return self.logits(x, batch_size).argmax(axis=1)

    def _forward(self, h: np.ndarray) -> np.ndarray:
        for op in self.ops:
            if op.kind == FLATTEN:
                h = h.reshape(h.shape[0], -1)
            elif op.kind == RELU:
                h = np.maximum(h, 0.0)
            elif op.kind in (MAXPOOL, AVGPOOL):
                h = _pool(h, op.kernel, op.stride, op.kind == MAXPOOL)
            elif op.kind == LINEAR:
                h = h @ op.weight.astype(np.float64).T + op.bias.astype(np.float64)
            else:
                h = _conv2d(h, op.weight.astype(np.float64), op.bias.astype(np.float64), op.padding)
        return h


def _pool(h: np.ndarray, k: int, s: int, is_max: bool) -> np.ndarray:
    """k x k pooling with stride s, floor mode, no padding (torch's defaults)."""
    n, c, hh, ww = h.shape
    oh, ow = (hh - k) // s + 1, (ww - k) // s + 1
    win = np.lib.stride_tricks.sliding_window_view(h, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :oh, :ow]
    return win.max(axis=(4, 5)) if is_max else win.mean(axis=(4, 5))


def _conv2d(h: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 zero-padded cross-correlation (torch's Conv2d) as one matmul."""
    n, c, hh, ww = h.shape
    o, _, kh, kw = w.shape
    hp = np.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(hp, (kh, kw), axis=(2, 3))  # n, c, oh, ow, kh, kw
    out = np.einsum("ncyxij,ocij->noyx", win, w, optimize=True)
    return out + b[None, :, None, None]


def read_packed(path: str | Path) -> PackedNetwork:
    """Decode a packed file; :class:`PackedFormatError` (one line) if it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackedFormatError(f"cannot read packed file {path}: {exc.strerror}") from None
    try:
        return decode(data)
    except PackedFormatError as exc:
        raise PackedFormatError(f"{path}: {exc}") from None


def decode(data: bytes) -> PackedNetwork:
    if len(data) < HEADER.size + TRAILER_BYTES or data[:4] != MAGIC:
        raise PackedFormatError("not a qdesign packed file (bad magic)")
    body, (crc,) = data[:-TRAILER_BYTES], struct.unpack("<I", data[-TRAILER_BYTES:])
    if zlib.crc32(body) != crc:
        raise PackedFormatError("corrupt packed file (CRC mismatch)")
    _, version, n_ops, n_classes, c, h, w = HEADER.unpack_from(body, 0)
    if version != VERSION:
        raise PackedFormatError(f"packed format version {version}, this reader reads {VERSION}")
    pos = HEADER.size
    ops = []

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(body):
            raise PackedFormatError("truncated packed file")
        chunk = body[pos : pos + n]
        pos += n
        return chunk

    for _ in range(n_ops):
        kind, a, b, _ = OP.unpack(take(OP.size))
        if kind not in OP_NAMES:
            raise PackedFormatError(f"unknown op code {kind}")
        if kind not in _WEIGHT_OPS:
            ops.append(
                Op(kind, kernel=a if kind in (MAXPOOL, AVGPOOL) else 0, stride=b if kind in (MAXPOOL, AVGPOOL) else 0)
            )
            continue
        out_f, in_f, kh, kw = SHAPE.unpack(take(SHAPE.size))
        shape = (out_f, in_f) if kind == LINEAR else (out_f, in_f, kh, kw)
        n = out_f * in_f * kh * kw
        op = Op(kind, bits=a, padding=b, shape=shape)
        if a == FLOAT_BITS:
            op.weight = np.frombuffer(take(4 * n), dtype="<f4").astype(np.float32).reshape(shape)
        else:
            (step,) = struct.unpack("<f", take(4))
            op.step = float(step)
            op.codes = unpack_codes(take(packed_code_bytes(n, a)), n, a).reshape(shape)
            op.weight = op.codes.astype(np.float32) * np.float32(step)
        op.bias = np.frombuffer(take(4 * out_f), dtype="<f4").astype(np.float32)
        ops.append(op)
    if pos != len(body):
        raise PackedFormatError(f"{len(body) - pos} unexpected bytes after the last op")
    return PackedNetwork((c, h, w), n_classes, ops, version)
