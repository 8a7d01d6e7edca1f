#!/usr/bin/python3
"""safetensors in plain Python + numpy: read (single file or sharded) and write.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 N, then N bytes
of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
then the data section; offsets are relative to the start of the data section, little-endian.

Supported dtypes: F64, F32, F16, BF16, F8_E4M3 (e4m3fn), and the integer types for completeness.
BF16 is widened to float32 by shifting its 16 bits into the high half of a float32.
F8_E4M3 is decoded by the format's definition (see `fp8_e4m3_table`); a tensor `<name>` stored as
F8_E4M3 with a companion `<name>_scale_inv` (float32 [ceil(rows/B), ceil(cols/B)], B = 128) is
dequantized as W[i, j] = fp8(W[i, j]) * scale_inv[i // B, j // B] (DeepSeek's FP8 checkpoints).

This module is part of epinfer's independent reference: it never calls the C++ engine.
"""
import json
import math
import os
import struct

import numpy as np

BLOCK = 128

_INT_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# Bytes per element of every dtype the reader understands.
ITEMSIZE = {name: dt.itemsize for name, dt in _INT_DTYPES.items()}
ITEMSIZE.update({"BF16": 2, "F8_E4M3": 1})


class SafetensorsError(ValueError):
    """A malformed or inconsistent safetensors file; the message names the file and tensor."""


# ---------------------------------------------------------------------------------------------
# Element formats
# ---------------------------------------------------------------------------------------------

def bf16_to_f32(bits):
    """uint16 bf16 bit patterns -> float32 (exact: bf16 is the high half of a float32)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    """float32 -> uint16 bf16 bits, round to nearest, ties to even (NaN stays NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, (u >> 16).astype(np.uint16) | np.uint16(0x0040), rounded)
    return rounded


def fp8_e4m3_table():
    """float64[256]: the value of each float8 e4m3fn code.

    e4m3fn: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is subnormal
    (m/8 * 2^-6); there are no infinities; S.1111.111 (0x7F, 0xFF) is NaN; max finite 448.
    """
    codes = np.arange(256, dtype=np.int64)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = (codes & 0x7).astype(np.float64)
    normal = np.ldexp(1.0 + man / 8.0, (exp - 7).astype(np.int64))
    subnormal = np.ldexp(man / 8.0, -6)
    value = sign * np.where(exp == 0, subnormal, normal)
    value[(exp == 0xF) & ((codes & 0x7) == 0x7)] = np.nan
    return value


_FP8_TABLE = fp8_e4m3_table()
# Non-negative finite codes 0x00..0x7E have increasing values: used by the encoder.
_FP8_POS = _FP8_TABLE[:0x7F]


def fp8_e4m3_to_f32(codes):
    return _FP8_TABLE[np.asarray(codes, dtype=np.uint8)].astype(np.float32)


def f32_to_fp8_e4m3(x):
    """Round to the nearest e4m3fn value, ties to even mantissa, saturating at +-448."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(_FP8_POS, mag, side="left"), 0, 0x7E)
    lo = np.clip(hi - 1, 0, 0x7E)
    d_hi = np.abs(_FP8_POS[hi] - mag)
    d_lo = np.abs(mag - _FP8_POS[lo])
    pick_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (lo % 2 == 0))
    code = np.where(pick_lo, lo, hi).astype(np.uint8)
    code = np.where(np.signbit(x) & (code != 0), code | 0x80, code).astype(np.uint8)
    code = np.where(np.isnan(x), np.uint8(0x7F), code).astype(np.uint8)
    return code


def _block_pair(block):
    if isinstance(block, (tuple, list)):
        return int(block[0]), int(block[1])
    return int(block), int(block)


def block_dequant(codes, scale_inv, block=BLOCK):
    """fp8 codes [rows, cols] and float32 scale_inv [ceil(rows/br), ceil(cols/bc)] -> float64.

    W[i, j] = fp8(codes[i, j]) * scale_inv[i // br, j // bc]; edge blocks may be partial.
    `block` is an int (square blocks) or (br, bc) as in config.json's weight_block_size.
    """
    br, bc = _block_pair(block)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise SafetensorsError("fp8 block dequantization needs a 2-D tensor, got shape %s"
                               % (codes.shape,))
    rows, cols = codes.shape
    want = (math.ceil(rows / br), math.ceil(cols / bc))
    if tuple(scale_inv.shape) != want:
        raise SafetensorsError("scale_inv shape %s does not cover weight %s in %dx%d blocks "
                               "(want %s)" % (tuple(scale_inv.shape), codes.shape, br, bc, want))
    values = _FP8_TABLE[codes.astype(np.uint8)]
    scale = np.asarray(scale_inv, dtype=np.float64)
    expanded = np.repeat(np.repeat(scale, br, axis=0), bc, axis=1)[:rows, :cols]
    return values * expanded


def block_quant(w, block=BLOCK):
    """float [rows, cols] -> (fp8 codes uint8, float32 scale_inv) with amax/448 per block."""
    w = np.asarray(w, dtype=np.float64)
    rows, cols = w.shape
    br, bc = math.ceil(rows / block), math.ceil(cols / block)
    scale = np.ones((br, bc), dtype=np.float32)
    for i in range(br):
        for j in range(bc):
            amax = np.abs(w[i * block:(i + 1) * block, j * block:(j + 1) * block]).max()
            scale[i, j] = np.float32(amax / 448.0) if amax > 0 else np.float32(1.0)
    expanded = np.repeat(np.repeat(scale.astype(np.float64), block, 0), block, 1)[:rows, :cols]
    return f32_to_fp8_e4m3(w / expanded), scale


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

class SafetensorsFile:
    """One .safetensors file, memory-mapped; tensors are decoded on request."""

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError("%s: file too short for a safetensors header" % path)
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise SafetensorsError("%s: header length %d runs past the end of the file (%d "
                                       "bytes)" % (path, n, size))
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise SafetensorsError("%s: header is not valid JSON: %s" % (path, e))
        if not isinstance(header, dict):
            raise SafetensorsError("%s: header is not a JSON object" % path)
        self.metadata = header.pop("__metadata__", {}) or {}
        self.data_start = 8 + n
        data_len = size - self.data_start
        self.entries = {}
        spans = []
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError("%s: tensor %s: entry needs dtype, shape, data_offsets"
                                       % (path, name))
            if dtype not in ITEMSIZE:
                raise SafetensorsError("%s: tensor %s: unknown dtype %r" % (path, name, dtype))
            if any((not isinstance(d, int)) or d < 0 for d in shape):
                raise SafetensorsError("%s: tensor %s: bad shape %r" % (path, name, shape))
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_len):
                raise SafetensorsError("%s: tensor %s: data_offsets [%r, %r] outside the %d-byte data "
                                       "section" % (path, name, begin, end, data_len))
            want = int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[dtype]
            if end - begin != want:
                raise SafetensorsError("%s: tensor %s: %d bytes for %s %s (want %d)"
                                       % (path, name, end - begin, dtype, shape, want))
            self.entries[name] = (dtype, tuple(shape), begin, end)
            spans.append((begin, end, name))
        spans.sort()
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise SafetensorsError("%s: tensors %s and %s overlap" % (path, n0, n1))
        self._map = np.memmap(path, dtype=np.uint8, mode="r") if size > 0 else None

    def names(self):
        return list(self.entries)

    def info(self, name):
        """(dtype string, shape tuple)."""
        dtype, shape, _, _ = self.entries[name]
        return dtype, shape

    def raw(self, name):
        """The stored elements: float/int arrays as stored, BF16 as uint16 bits, F8 as uint8."""
        dtype, shape, begin, end = self.entries[name]
        buf = self._map[self.data_start + begin:self.data_start + end]
        if dtype == "BF16":
            arr = buf.view("<u2")
        elif dtype == "F8_E4M3":
            arr = buf.view(np.uint8)
        else:
            arr = buf.view(_INT_DTYPES[dtype])
        return np.array(arr).reshape(shape)

    def decoded(self, name):
        """The tensor's values as float32 (float64 for F64); fp8 decoded without its scale."""
        dtype = self.entries[name][0]
        arr = self.raw(name)
        if dtype == "BF16":
            return bf16_to_f32(arr)
        if dtype == "F8_E4M3":
            return fp8_e4m3_to_f32(arr)
        if dtype == "F16":
            return arr.astype(np.float32)
        return arr


class Checkpoint:
    """A checkpoint directory (or one .safetensors file): single file or sharded by an index."""

    def __init__(self, path):
        self.files = {}
        self.where = {}
        if os.path.isfile(path):
            self._add(path)
            return
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise SafetensorsError("%s: not a safetensors index with weight_map: %s" % (index, e))
            for name, shard in sorted(weight_map.items()):
                shard_path = os.path.join(path, shard)
                if shard_path not in self.files:
                    if not os.path.exists(shard_path):
                        raise SafetensorsError("%s: tensor %s maps to missing shard %s"
                                               % (index, name, shard))
                    self.files[shard_path] = SafetensorsFile(shard_path)
                if name not in self.files[shard_path].entries:
                    raise SafetensorsError("%s: tensor %s is not in %s" % (index, name, shard_path))
                self.where[name] = shard_path
            return
        candidates = sorted(p for p in os.listdir(path) if p.endswith(".safetensors"))
        if not candidates:
            raise SafetensorsError("%s: no model.safetensors.index.json and no .safetensors file"
                                   % path)
        for c in candidates:
            self._add(os.path.join(path, c))

    def _add(self, file_path):
        st = SafetensorsFile(file_path)
        self.files[file_path] = st
        for name in st.entries:
            if name in self.where:
                raise SafetensorsError("tensor %s is in both %s and %s"
                                       % (name, self.where[name], file_path))
            self.where[name] = file_path

    def names(self):
        return sorted(self.where)

    def __contains__(self, name):
        return name in self.where

    def info(self, name):
        return self._file(name).info(name)

    def _file(self, name):
        if name not in self.where:
            raise KeyError("tensor %s is not in the checkpoint" % name)
        return self.files[self.where[name]]

    def raw(self, name):
        return self._file(name).raw(name)

    def get(self, name, shape=None, block=BLOCK):
        """The tensor as float64, fp8 dequantized by `<name>_scale_inv`; checks `shape` if given."""
        f = self._file(name)
        dtype, stored_shape = f.info(name)
        if shape is not None and tuple(stored_shape) != tuple(shape):
            raise SafetensorsError("%s: tensor %s has shape %s, expected %s"
                                   % (f.path, name, tuple(stored_shape), tuple(shape)))
        if dtype == "F8_E4M3":
            scale_name = name + "_scale_inv"
            if scale_name not in self:
                raise SafetensorsError("%s: fp8 tensor %s has no %s" % (f.path, name, scale_name))
            scale = self._file(scale_name).decoded(scale_name)
            try:
                return block_dequant(f.raw(name), scale, block)
            except SafetensorsError as e:
                raise SafetensorsError("%s: tensor %s: %s" % (f.path, name, e))
        return np.asarray(f.decoded(name), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Writing (for tests)
# ---------------------------------------------------------------------------------------------

def encode(array, dtype):
    """numpy array -> (bytes, dtype string) in safetensors element format `dtype`."""
    a = np.asarray(array)
    if dtype == "BF16":
        data = f32_to_bf16(a.astype(np.float32)) if a.dtype != np.uint16 else a
        return np.ascontiguousarray(data, dtype="<u2").tobytes()
    if dtype == "F8_E4M3":
        data = a if a.dtype == np.uint8 else f32_to_fp8_e4m3(a)
        return np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(a, dtype=_INT_DTYPES[dtype]).tobytes()


def save_file(tensors, path, metadata=None):
    """tensors: {name: (array, dtype string)}; writes one safetensors file (header padded to 8)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        array, dtype = tensors[name]
        blob = encode(array, dtype)
        header[name] = {"dtype": dtype, "shape": list(np.shape(array)),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def save_checkpoint(tensors, directory, shards=1):
    """Writes model.safetensors, or `shards` files model-0000i-of-0000K.safetensors plus
    model.safetensors.index.json with weight_map, as Hugging Face lays them out."""
    os.makedirs(directory, exist_ok=True)
    names = sorted(tensors)
    if shards <= 1:
        save_file(tensors, os.path.join(directory, "model.safetensors"), {"format": "pt"})
        return
    weight_map = {}
    total = 0
    for k in range(shards):
        part = names[k::shards]
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, shards)
        save_file({n: tensors[n] for n in part}, os.path.join(directory, fname), {"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += len(encode(*tensors[n]))
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                  sort_keys=True)
