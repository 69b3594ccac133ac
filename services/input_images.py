"""Checking an image a user gives as a model input, before anything is spent.

:func:`check_input_image` judges the bytes themselves, never the file name or the
declared type: the size, the format (PNG, JPEG, WebP, GIF by their first bytes), the
pixel count read from the header *before* decoding (an explicit limit, so a
decompression bomb is refused without trusting ``Image.MAX_IMAGE_PIXELS``), and that the
image decodes. It returns what to send: the original bytes when they can go as they
are, else a re-encoding (PNG when there is transparency or the source was lossless,
JPEG otherwise) that applies the EXIF orientation, drops metadata such as a phone's GPS
position, keeps the first frame of an animation and shrinks an image above
``max_side``. A refusal is an :class:`InputImageError` whose ``user_message`` says why.

Sending it: Replicate takes a file input as a URL, a file uploaded through its Files API
(``ReplicateService.upload``; the returned URL, up to 100 MB, kept a day) or a data
URI, which Replicate recommends only under about 1 MB. A data URI also travels inside
the prediction's ``input``, so it is repeated in every answer about that prediction
(polls, listings, webhook deliveries): :attr:`InputImage.fits_data_uri` therefore says
yes only up to :data:`DATA_URI_MAX_BYTES` (256 KiB); upload anything bigger.

Blocking and CPU-bound: call it in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from services.errors import UserFacingError
from services.sniff import sniff_format

__all__ = [
    "ACCEPTED_FORMATS",
    "DATA_URI_MAX_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "InputImage",
    "InputImageError",
    "check_input_image",
    "to_data_uri",
]

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 2048
DATA_URI_MAX_BYTES = 256 * 1024
JPEG_QUALITY = 95

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# Modes a model reads without surprise, per format the bytes may be sent in as they are.
_PLAIN_MODES = {
    "PNG": {"RGB", "RGBA", "L", "LA", "P"},
    "JPEG": {"RGB", "L"},
    "WEBP": {"RGB", "RGBA"},
}
_NAMES = {"HEIC": "HEIC", "AVIF": "AVIF", "BMP": "BMP", "TIFF": "TIFF", "PDF": "PDF"}
_ACCEPTED_WORDS = "PNG, JPEG, WebP or GIF"


class InputImageError(UserFacingError):
    """An input image was refused; ``reason`` is one of ``empty``, ``too_large``,
    ``not_image``, ``unsupported``, ``too_many_pixels``, ``unreadable``."""

    def __init__(self, reason: str, user_message: str) -> None:
        super().__init__(user_message, message=f"input image refused ({reason}): {user_message}")
        self.reason = reason


@dataclass(frozen=True)
class InputImage:
    """What to send for an input image: ``data`` in ``content_type``; ``reencoded`` when
    it is not the bytes the user gave."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    reencoded: bool

    @property
    def filename(self) -> str:
        """A name for an upload, e.g. ``input.png``."""
        ext = self.content_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
        return f"input.{ext}"

    @property
    def fits_data_uri(self) -> bool:
        """Small enough to send inline as a data URI (else upload it)."""
        return len(self.data) <= DATA_URI_MAX_BYTES

    def data_uri(self) -> str:
        return to_data_uri(self.data, self.content_type)


def to_data_uri(data: bytes, content_type: str) -> str:
    """``data:<type>;base64,<data>``, the form Replicate takes for a file input."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _size(n: int) -> str:
    mb = n / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def check_input_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> InputImage:
    """Check ``data`` as an input image and return what to send (see the module doc).

    Raises :class:`InputImageError` with a plain message when it is refused."""
    if max_bytes < 1 or max_pixels < 1 or max_side < 1:
        raise ValueError("limits must be positive")
    if not data:
        raise InputImageError("empty", "That file is empty.")
    if len(data) > max_bytes:
        raise InputImageError(
            "too_large", f"The image is too large ({_size(len(data))} > {_size(max_bytes)})."
        )
    fmt = sniff_format(data[:300])
    if fmt not in ACCEPTED_FORMATS:
        if fmt in _NAMES:
            raise InputImageError(
                "unsupported",
                f"{_NAMES[fmt]} files are not supported; send a {_ACCEPTED_WORDS} image.",
            )
        raise InputImageError("not_image", f"That file is not an image ({_ACCEPTED_WORDS}).")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise InputImageError(
                    "too_many_pixels",
                    f"The image has too many pixels ({width}×{height}; at most "
                    f"{max_pixels / 1_000_000:g} megapixels).",
                )
            opened.seek(0)  # the first frame of an animation
            opened.load()
            return _prepare(opened, fmt, data, max_side)
    except InputImageError:
        raise
    except Image.DecompressionBombError:
        raise InputImageError(
            "too_many_pixels",
            f"The image has too many pixels (at most {max_pixels / 1_000_000:g} megapixels).",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise InputImageError(
            "unreadable", "That image could not be read; it may be damaged."
        ) from exc


def _prepare(opened: Image.Image, fmt: str, data: bytes, max_side: int) -> InputImage:
    width, height = opened.size
    oriented = opened.getexif().get(0x0112, 1) not in (0, 1)
    has_exif = bool(opened.info.get("exif")) or bool(opened.getexif())
    animated = bool(getattr(opened, "is_animated", False))
    too_big = max(width, height) > max_side
    plain = opened.mode in _PLAIN_MODES.get(fmt, set())
    if not (oriented or has_exif or animated or too_big or not plain or fmt == "GIF"):
        return InputImage(data, _MIME[fmt], width, height, reencoded=False)

    image = ImageOps.exif_transpose(opened) if oriented else opened.copy()
    alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    image = image.convert("RGBA" if alpha else "RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    lossless = alpha or fmt in ("PNG", "GIF")
    icc = opened.info.get("icc_profile")
    extra = {"icc_profile": icc} if isinstance(icc, bytes) else {}
    buffer = io.BytesIO()
    if lossless:
        image.save(buffer, format="PNG", compress_level=6, **extra)
        content_type = "image/png"
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, **extra)
        content_type = "image/jpeg"
    return InputImage(buffer.getvalue(), content_type, *image.size, reencoded=True)
