"""The packed binary format: b-bit integer weights as real bytes, the input
normalisation, and a NumPy-only reader that runs the network on raw pixels.

This module imports NumPy only (no torch), so a deployment tool or a test on a
machine without PyTorch can read and run a packed file. The layout is
specified in ``docs/export.md``; in short (all integers little-endian)::

    header   16 bytes  magic b"QDPK", u16 version (2), u16 n_ops, u16 n_classes,
                       u16 C, u16 H, u16 W
    norm     8*C bytes C f32 means, then C f32 standard deviations: the network
                       takes raw pixels x and computes (x - mean) / std per
                       channel in float32 (version 2; absent in version 1)
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

The reader refuses, with one line, any file whose fields disagree with each
other (not only a bad CRC): every op's arguments and reserved byte, every
layer's shape against the activation it receives, the class count against the
last layer, the normalisation and every step, weight and bias finite.
Version 1 files (no normalisation) are still read; they run only on inputs the
caller normalised (:meth:`PackedNetwork.logits_normalised`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"QDPK"
VERSION = 2
VERSIONS = (1, 2)  # what this reader reads; version 1 carries no input normalisation
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
_POOLS = (MAXPOOL, AVGPOOL)


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


def overhead_bytes(n_ops: int, n_weight_ops: int, channels: int, version: int = VERSION) -> int:
    """Bytes of the file that are not the memory model's weights, steps and
    biases: header, normalisation (8 bytes per input channel, version 2), op
    records, weight shapes and the CRC trailer."""
    norm = 8 * int(channels) if version >= 2 else 0
    return HEADER.size + norm + OP.size * int(n_ops) + SHAPE.size * int(n_weight_ops) + TRAILER_BYTES


def _op_args(op: Op) -> tuple[int, int]:
    if op.kind in _WEIGHT_OPS:
        return op.bits, op.padding
    if op.kind in _POOLS:
        return op.kernel, op.stride
    return 0, 0


def check_normalisation(mean, std, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``std`` as float32 vectors of one value per channel, checked."""
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    if m.size != channels or s.size != channels:
        raise PackedFormatError(f"normalisation has {m.size} means and {s.size} stds for {channels} input channels")
    m32, s32 = m.astype("<f4"), s.astype("<f4")
    if not (np.isfinite(m32).all() and np.isfinite(s32).all() and (s32 > 0).all()):
        raise PackedFormatError(f"normalisation mean {m.tolist()} std {s.tolist()}: must be finite with std > 0")
    return m32, s32


def encode(ops: list[Op], input_shape: tuple[int, int, int], n_classes: int, mean, std) -> bytes:
    """The bytes of a packed file (see the module docstring). ``mean``/``std``:
    one value per input channel, the normalisation the network was trained
    with (stored as float32, as PyTorch applied it)."""
    if len(input_shape) != 3:
        raise PackedFormatError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    for v in (len(ops), n_classes, *input_shape):
        if not 0 <= int(v) < 2**16:
            raise PackedFormatError(f"header value {v} does not fit in 16 bits")
    m32, s32 = check_normalisation(mean, std, int(input_shape[0]))
    parts = [HEADER.pack(MAGIC, VERSION, len(ops), int(n_classes), *(int(v) for v in input_shape))]
    parts += [m32.tobytes(), s32.tobytes()]
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
    data = body + struct.pack("<I", zlib.crc32(body))
    decode(data)  # never write a file the reader would refuse
    return data


@dataclass
class PackedNetwork:
    """A decoded packed file: the op list, what the input must look like and
    (version 2) the per-channel normalisation of raw pixels."""

    input_shape: tuple[int, int, int]
    n_classes: int
    ops: list[Op] = field(default_factory=list)
    version: int = VERSION
    mean: np.ndarray | None = None  # float32, one per channel; None in a version 1 file
    std: np.ndarray | None = None

    def normalise(self, x) -> np.ndarray:
        """Raw pixels (N, C, H, W; e.g. the uint8 images of a prepared dataset)
        -> ``(x - mean) / std`` per channel in float32, exactly as PyTorch
        normalised the cell's data."""
        if self.mean is None:
            raise PackedFormatError(
                f"packed format version {self.version} carries no input normalisation: normalise the inputs "
                "yourself and call logits_normalised(), or export the cell again (version 2 takes raw pixels)"
            )
        x = self._checked(x)
        c = len(self.mean)
        return (x.astype(np.float32) - self.mean.reshape(1, c, 1, 1)) / self.std.reshape(1, c, 1, 1)

    def logits(self, x, batch_size: int = 1024) -> np.ndarray:
        """Logits (float64, N x n_classes) of raw pixels ``x`` (N, C, H, W)."""
        x = self._checked(x)
        return self._batched(x, batch_size, self.normalise)

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """Predicted classes of raw pixels ``x``."""
        return self.logits(x, batch_size).argmax(axis=1)

    def logits_normalised(self, x, batch_size: int = 1024) -> np.ndarray:
        """Forward pass in float64 on inputs already normalised (N, C, H, W).

        Weights are exactly the float32 values of PyTorch's baked model
        (float32(code) * float32(step)); float64 accumulation makes the result
        independent of summation order to far below float32 resolution.
        """
        x = self._checked(x)
        return self._batched(x, batch_size, lambda b: b)

    def _checked(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"input must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        return x

    def _batched(self, x: np.ndarray, batch_size: int, prepare) -> np.ndarray:
        outs = [
            self._forward(prepare(x[i : i + batch_size]).astype(np.float64)) for i in range(0, x.shape[0], batch_size)
        ]
        return np.concatenate(outs) if outs else np.zeros((0, self.n_classes))

    def _forward(self, h: np.ndarray) -> np.ndarray:
        for op in self.ops:
            if op.kind == FLATTEN:
                h = h.reshape(h.shape[0], -1)
            elif op.kind == RELU:
                h = np.maximum(h, 0.0)
            elif op.kind in _POOLS:
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


class _Reader:
    """Bounds-checked reads from the body of a packed file."""

    def __init__(self, body: bytes, pos: int):
        self.body, self.pos = body, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise PackedFormatError("truncated packed file")
        chunk = self.body[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def floats(self, n: int, what: str) -> np.ndarray:
        values = np.frombuffer(self.take(4 * n), dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise PackedFormatError(f"{what} holds a value that is not finite")
        return values


def decode(data: bytes) -> PackedNetwork:
    """Decode and check the bytes of a packed file (see the module docstring)."""
    if len(data) < HEADER.size + TRAILER_BYTES or data[:4] != MAGIC:
        raise PackedFormatError("not a qdesign packed file (bad magic)")
    body, (crc,) = data[:-TRAILER_BYTES], struct.unpack("<I", data[-TRAILER_BYTES:])
    if zlib.crc32(body) != crc:
        raise PackedFormatError("corrupt packed file (CRC mismatch)")
    _, version, n_ops, n_classes, c, h, w = HEADER.unpack_from(body, 0)
    if version not in VERSIONS:
        raise PackedFormatError(f"packed format version {version}; this reader reads {', '.join(map(str, VERSIONS))}")
    if min(c, h, w) == 0:
        raise PackedFormatError(f"input shape {c} x {h} x {w} has a zero dimension")
    if n_classes == 0 or n_ops == 0:
        raise PackedFormatError(f"{n_ops} ops and {n_classes} classes: a network needs at least one of each")
    r = _Reader(body, HEADER.size)
    mean = std = None
    if version >= 2:
        mean, std = r.floats(c, "the normalisation"), r.floats(c, "the normalisation")
        if not (std > 0).all():
            raise PackedFormatError(f"normalisation std {std.tolist()} must be > 0")
    shape: tuple[int, ...] = (c, h, w)  # the activation of one example, checked op by op
    ops = []
    for i in range(n_ops):
        op, shape = _decode_op(r, i, shape)
        ops.append(op)
    if shape != (n_classes,):
        raise PackedFormatError(f"the last op gives an output of shape {shape}, the header says {n_classes} classes")
    if r.pos != len(body):
        raise PackedFormatError(f"{len(body) - r.pos} unexpected bytes after the last op")
    return PackedNetwork((c, h, w), n_classes, ops, version, mean, std)


def _decode_op(r: _Reader, i: int, shape: tuple[int, ...]) -> tuple[Op, tuple[int, ...]]:
    """Op ``i`` from the reader, and the activation shape after it; one line
    naming the op if its fields disagree with each other or with ``shape``."""
    kind, a, b, reserved = OP.unpack(r.take(OP.size))
    if kind not in OP_NAMES:
        raise PackedFormatError(f"op {i}: unknown op code {kind}")
    where = f"op {i} ({OP_NAMES[kind]})"
    if reserved:
        raise PackedFormatError(f"{where}: reserved byte is {reserved}, must be 0")
    if kind in (FLATTEN, RELU):
        if a or b:
            raise PackedFormatError(f"{where}: arguments {a}, {b} must be 0")
        if kind == RELU:
            return Op(kind), shape
        if len(shape) != 3:
            raise PackedFormatError(f"{where}: input of shape {shape} is already flat")
        return Op(kind), (int(np.prod(shape)),)
    if kind in _POOLS:
        if a == 0 or b == 0:
            raise PackedFormatError(f"{where}: kernel {a} and stride {b} must be at least 1")
        if len(shape) != 3 or a > min(shape[1:]):
            raise PackedFormatError(f"{where}: a {a} x {a} window does not fit an input of shape {shape}")
        out = (shape[0], (shape[1] - a) // b + 1, (shape[2] - a) // b + 1)
        return Op(kind, kernel=a, stride=b), out
    bits, padding = a, b
    if not (1 <= bits <= MAX_PACKED_BITS or bits == FLOAT_BITS):
        raise PackedFormatError(f"{where}: {bits} bits; a layer has 1..{MAX_PACKED_BITS} or {FLOAT_BITS}")
    out_f, in_f, kh, kw = SHAPE.unpack(r.take(SHAPE.size))
    if min(out_f, in_f, kh, kw) == 0:
        raise PackedFormatError(f"{where}: weight shape {out_f} x {in_f} x {kh} x {kw} has a zero dimension")
    if kind == LINEAR:
        if padding or (kh, kw) != (1, 1):
            raise PackedFormatError(f"{where}: padding {padding} and kernel {kh} x {kw} must be 0 and 1 x 1")
        if shape != (in_f,):
            raise PackedFormatError(f"{where}: {in_f} inputs, but it receives an activation of shape {shape}")
        wshape, after = (out_f, in_f), (out_f,)
    else:
        if len(shape) != 3 or shape[0] != in_f:
            raise PackedFormatError(f"{where}: {in_f} input channels, but it receives an activation of shape {shape}")
        oh, ow = shape[1] + 2 * padding - kh + 1, shape[2] + 2 * padding - kw + 1
        if oh < 1 or ow < 1:
            raise PackedFormatError(f"{where}: a {kh} x {kw} kernel does not fit an input of shape {shape}")
        wshape, after = (out_f, in_f, kh, kw), (out_f, oh, ow)
    n = out_f * in_f * kh * kw
    op = Op(kind, bits=bits, padding=padding, shape=wshape)
    if bits == FLOAT_BITS:
        op.weight = r.floats(n, f"{where}'s weights").reshape(wshape)
    else:
        (step,) = struct.unpack("<f", r.take(4))
        if not (np.isfinite(step) and step > 0):
            raise PackedFormatError(f"{where}: step {step} must be finite and > 0")
        op.step = float(step)
        try:
            op.codes = unpack_codes(r.take(packed_code_bytes(n, bits)), n, bits).reshape(wshape)
        except PackedFormatError as exc:
            raise PackedFormatError(f"{where}: {exc}") from None
        op.weight = op.codes.astype(np.float32) * np.float32(step)
        if not np.isfinite(op.weight).all():
            raise PackedFormatError(f"{where}: step {step} times the codes overflows float32")
    op.bias = r.floats(out_f, f"{where}'s biases")
    return op, after
