"""PNG with the webui's generation parameters in the `parameters` text chunk (torch-free)."""

from __future__ import annotations

import io
import zlib

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the most a compressed text chunk is inflated to (an infotext is a few kB)
MAX_TEXT = 1024 * 1024


def png_bytes(image: Image.Image, infotext: str) -> bytes:
    """Encode `image` as PNG carrying `infotext` in a `parameters` text chunk, as the webui does."""
    meta = PngInfo()
    meta.add_text(PARAMETERS_KEY, infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def read_parameters(data: bytes) -> str | None:
    """The `parameters` text of a PNG, or None when it has none (or is not a PNG). Read from
    the file's text chunks alone: the pixels are never decoded (a small file may declare a
    huge image), and a compressed chunk is inflated to MAX_TEXT bytes at most."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if len(body) < length or kind == b"IEND":
            return None
        at += 12 + length  # length, type, data, CRC
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, _, rest = body.partition(b"\0")
            if keyword == PARAMETERS_KEY.encode("latin-1"):
                return _text(kind, rest)
    return None


def _text(kind: bytes, rest: bytes) -> str | None:
    """A text chunk's value after its keyword (PNG 1.2, section 11.3.4)."""
    try:
        if kind == b"tEXt":
            return rest.decode("latin-1")
        if kind == b"zTXt":  # compression method (0), then deflated latin-1
            return _inflate(rest[1:]).decode("latin-1")
        compressed, _method = rest[0], rest[1]  # iTXt
        _language, _, rest = rest[2:].partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        return (_inflate(text) if compressed else text).decode("utf-8")
    except (IndexError, UnicodeDecodeError, zlib.error, ValueError):
        return None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT)
    if inflater.unconsumed_tail:
        raise ValueError(f"a text chunk inflates to more than {MAX_TEXT} bytes")
    return out
