"""Reading a model file's bytes once, as a stream: a file object that hashes and counts what
is read through it, the safetensors header (tensor names, dtypes, shapes, offsets) and the
error every check raises."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
MAX_JSON = 1024 * 1024  # a config.json / model_index.json bigger than this is not a config
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class ModelFileError(Exception):
    """The file is not a usable model of the claimed type; the message says why. `sha256` and
    `size` are those of the whole file (read to its end even after the fault is found)."""

    sha256: str = ""
    size: int = 0


Shapes = dict[str, list[int]]


class Stream(io.RawIOBase):
    """A read-once file over byte chunks that hashes and counts everything read through it."""

    def __init__(self, chunks: Iterable[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""
        self.digest = hashlib.sha256()
        self.size = 0
        self.on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._buf += chunk

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[:n]

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if not self._buf:
            self._fill(1)
        data, self._buf = self._buf[: len(view)], self._buf[len(view) :]
        view[: len(data)] = data
        if data:
            self.digest.update(data)
            self.size += len(data)
            if self.on_bytes:
                self.on_bytes(self.size)
        return len(data)

    def drain(self) -> None:
        while self.read(8 * 1024 * 1024):
            pass


def is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= MAX_HEADER and head[8:9] == b"{"


def parse_header(raw: bytes, what: str) -> tuple[Shapes, int]:
    """Tensor shapes and the byte length of the data section, from a safetensors JSON header."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(f"{what}: the safetensors header is not valid JSON") from None
    except RecursionError:  # the parser recurses per level: a header nested thousands deep
        raise ModelFileError(f"{what}: the safetensors header is nested too deep") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{what}: the safetensors header is not a JSON object")
    shapes: Shapes = {}
    end = 0
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in DTYPE_BYTES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(start, int)
                and isinstance(stop, int)
                and 0 <= start <= stop
            )
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"{what}: tensor {name!r} has a malformed entry")
        count = 1
        for d in shape:
            count *= d
        if stop - start != count * DTYPE_BYTES[dtype]:
            raise ModelFileError(f"{what}: tensor {name!r}: its byte range does not fit its shape")
        shapes[name] = list(shape)
        spans.append((start, stop))
        end = max(end, stop)
    if not shapes:
        raise ModelFileError(f"{what}: holds no tensors")
    spans.sort()
    position = 0
    for start, stop in spans:  # safetensors requires the data section to be tiled exactly
        if start != position:
            raise ModelFileError(f"{what}: tensor data overlaps or leaves holes")
        position = stop
    return shapes, end


def read_exactly(stream: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(n - len(out), 8 * 1024 * 1024))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def digest_rest(stream: Any) -> str:
    """The SHA-256 of everything left in `stream` (read to its end)."""
    digest = hashlib.sha256()
    while chunk := stream.read(8 * 1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def read_safetensors_header(
    stream: Any, what: str, metadata: dict[str, Any] | None = None
) -> tuple[Shapes, int, int]:
    """(shapes, header bytes incl. the length prefix, data bytes) read from `stream`; the
    header's `__metadata__` strings go into `metadata` when one is given."""
    prefix = read_exactly(stream, 8)
    if len(prefix) < 8:
        raise ModelFileError(f"{what}: truncated safetensors file")
    (length,) = struct.unpack("<Q", prefix)
    if not 2 <= length <= MAX_HEADER:
        raise ModelFileError(f"{what}: not a safetensors file (bad header length)")
    raw = read_exactly(stream, length)
    if len(raw) < length:
        raise ModelFileError(f"{what}: truncated safetensors header")
    shapes, data = parse_header(raw, what)
    if metadata is not None:
        found = json.loads(raw).get("__metadata__")  # parsed once already: valid
        if isinstance(found, dict):
            metadata.update({str(k): v for k, v in found.items() if isinstance(v, str)})
    return shapes, 8 + length, data
