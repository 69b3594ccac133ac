"""Make generated images fit under Discord's upload limit.

Images that already fit are passed through byte for byte. Bigger ones are re-encoded as WebP
(JPEG when Pillow lacks WebP or the image is too large for WebP), first at falling quality and
then at a smaller size, until they fit.
"""

from __future__ import annotations

import io
import math
import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, ImageOps, features

from services.sniff import sniff_content_type

__all__ = ["MIN_LIMIT_BYTES", "FittedImage", "fit_image", "sniff_content_type"]

MIN_LIMIT_BYTES = 8 * 1024
QUALITIES = (90, 80, 70, 60, 50)
# Quality used once the image has to be scaled down: shrinking helps far more than crushing
# quality further, and scaled images still look decent at this setting.
SCALED_QUALITY = 70
MAX_SCALE_STEP = 0.75
WEBP_MAX_SIDE = 16383
# libwebp's slower methods barely shrink photos/noise further but cost up to 10x the time.
WEBP_METHOD = 0


@dataclass
class FittedImage:
    data: bytes
    content_type: str
    filename: str
    reencoded: bool
    width: int
    height: int


def _webp_available() -> bool:
    return bool(features.check("webp"))


def fit_image(data: bytes, filename: str, limit_bytes: int) -> FittedImage:
    """Return ``data`` unchanged if it fits in ``limit_bytes``, else a smaller re-encoding.

    Blocking and CPU-heavy; call it in a worker thread. Raises ``ValueError`` if
    ``limit_bytes`` is below :data:`MIN_LIMIT_BYTES` or ``data`` is too big and not an image.
    """
    if limit_bytes < MIN_LIMIT_BYTES:
        raise ValueError(f"limit_bytes must be at least {MIN_LIMIT_BYTES}, got {limit_bytes}")
    if len(data) <= limit_bytes:
        width, height = _probe_size(data)
        content_type = (
            sniff_content_type(data)
            or mimetypes.guess_type(filename)[0]
            or "application/octet-stream"
        )
        return FittedImage(data, content_type, filename, False, width, height)

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)  # first frame of an animation
            image = ImageOps.exif_transpose(opened)  # the orientation tag is not kept
            icc = opened.info.get("icc_profile")
            image.load()
    except Exception as exc:
        raise ValueError("data is not an image that can be re-encoded") from exc

    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    image = image.convert("RGBA" if has_alpha else "RGB")
    # Keep a colour profile only if it is small next to the limit, so it can never be what
    # stops the image from fitting.
    if not isinstance(icc, bytes) or len(icc) > limit_bytes // 8:
        icc = None

    use_webp = _webp_available()
    current = image
    quality_steps: tuple[int, ...] = QUALITIES
    while True:
        if use_webp and max(current.size) > WEBP_MAX_SIDE:
            use_webp = False
        size = 0
        for quality in quality_steps:
            out = None
            if use_webp:
                try:
                    out = _encode_webp(current, quality, icc)
                except (OSError, ValueError):
                    use_webp = False  # e.g. a WebP-less build or an unsupported size
            if out is None:
                out = _encode_jpeg(current, quality, icc)
            size = len(out)
            if size <= limit_bytes:
                ext, content_type = (".webp", "image/webp") if use_webp else (".jpg", "image/jpeg")
                return FittedImage(out, content_type, _rename(filename, ext), True, *current.size)
            if size > 2 * limit_bytes:
                break  # lower quality alone will not get there; shrink instead
        if current.size == (1, 1):
            # Unreachable with the minimum limit: a 1x1 image is a few hundred bytes.
            raise ValueError("image cannot be made small enough")
        # Pixel count roughly tracks file size; aim a little below the limit.
        factor = min(MAX_SCALE_STEP, math.sqrt(limit_bytes / size) * 0.95)
        new_size = (
            max(1, int(current.width * factor)),
            max(1, int(current.height * factor)),
        )
        current = image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        quality_steps = (SCALED_QUALITY,)


def _encode_webp(image: Image.Image, quality: int, icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    image.save(buf, "WEBP", quality=quality, method=WEBP_METHOD, **extra)
    return buf.getvalue()


def _encode_jpeg(image: Image.Image, quality: int, icc: bytes | None) -> bytes:
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    image.save(buf, "JPEG", quality=quality, optimize=False, **extra)
    return buf.getvalue()


def _probe_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return 0, 0


def _rename(filename: str, ext: str) -> str:
    path = PurePosixPath(PurePosixPath(filename.replace("\\", "/")).name)
    stem = path.stem if path.suffix else path.name
    if not stem or stem.startswith("."):
        stem = "image"
    return f"{stem}{ext}"
