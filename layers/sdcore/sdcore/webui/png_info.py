"""PNG with the webui's generation parameters in the `parameters` text chunk (torch-free)."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"


def png_bytes(image: Image.Image, infotext: str) -> bytes:
    """Encode `image` as PNG carrying `infotext` in a `parameters` text chunk, as the webui does."""
    meta = PngInfo()
    meta.add_text(PARAMETERS_KEY, infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def read_parameters(data: bytes) -> str | None:
    """The `parameters` text of a PNG, or None when it has none (or is not a PNG)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                return None
            image.load()  # text chunks after the image data are read only on load
            value = image.info.get(PARAMETERS_KEY)
    except (OSError, SyntaxError, ValueError):
        return None
    return value if isinstance(value, str) else None
