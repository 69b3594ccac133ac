"""The pictures the emulated models make: small, real, decodable images."""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import random
from urllib.parse import unquote

from PIL import Image, ImageDraw

from tests.emulators.replicate.schemas import FORMATS

BASE_SIDE = 64  # pixels of a 1:1 output; other ratios keep about the same area
MAX_UPSCALED_PIXELS = 4096 * 4096


def dimensions(aspect_ratio: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in aspect_ratio.split(":"))
    except ValueError:
        w, h = 1, 1
    return dimensions_like(w, h)


def dimensions_like(width: int, height: int) -> tuple[int, int]:
    """An output size with the shape of ``width`` x ``height`` and about the area of a
    square :data:`BASE_SIDE` image (multiples of 8, as the FLUX models round)."""
    scale = BASE_SIDE / math.sqrt(max(1, width) * max(1, height))
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)


def render_image(width: int, height: int, fmt: str, seed: int) -> bytes:
    """A small, real, decodable image."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    draw.ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill=tuple(rng.randrange(256) for _ in range(3)),
    )
    buffer = io.BytesIO()
    pil_format = FORMATS.get(fmt, FORMATS["webp"])[0]
    image.save(buffer, format=pil_format, **({"quality": 80} if pil_format != "PNG" else {}))
    return buffer.getvalue()


def render_large_png(target_bytes: int) -> bytes:
    """A decodable PNG of about ``target_bytes`` (noise, stored uncompressed)."""
    side = max(8, int(math.sqrt(max(target_bytes - 1024, 192) / 3)))
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an encoded image, or None if it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def upscale(data: bytes, scale: float) -> bytes:
    """``data`` (an encoded image) resized by ``scale``, as a PNG, which is what
    real-esrgan returns. Raises ``ValueError`` with the model's kind of message."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot identify image file: {exc}") from None
    width, height = round(image.width * scale), round(image.height * scale)
    if width < 1 or height < 1:
        raise ValueError(f"scale {scale:g} makes an empty image")
    if width * height > MAX_UPSCALED_PIXELS:
        raise ValueError(
            f"Image too large to upscale: {width}x{height} exceeds the maximum of "
            f"{MAX_UPSCALED_PIXELS} pixels"
        )
    buffer = io.BytesIO()
    image.resize((width, height), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_uri(uri: str) -> tuple[bytes, str | None]:
    """The bytes and media type of a ``data:`` URI; ``ValueError`` if malformed."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise ValueError("malformed data URI")
    media = header[len("data:") :]
    media_type = media.split(";", 1)[0] or None
    if media.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True), media_type
        except (binascii.Error, ValueError):
            raise ValueError("invalid base64 in data URI") from None
    return unquote(payload).encode("latin-1", errors="replace"), media_type
