"""Tests for services.images: fitting generated images under an upload limit."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from services import images
from services.images import FittedImage, fit_image, sniff_content_type
from tests.helpers.zips import image_bytes

MiB = 1024 * 1024
EXT_FOR_TYPE = {"image/webp": ".webp", "image/jpeg": ".jpg", "image/png": ".png"}


def _decode(fitted: FittedImage) -> Image.Image:
    im = Image.open(io.BytesIO(fitted.data))
    im.load()
    assert im.size == (fitted.width, fitted.height)
    assert sniff_content_type(fitted.data) == fitted.content_type
    return im


def _noise_png(size: tuple[int, int], mode: str = "RGBA") -> bytes:
    w, h = size
    im = Image.frombytes(mode, size, os.urandom(w * h * len(mode)))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _consistent(fitted: FittedImage) -> None:
    assert fitted.filename.endswith(EXT_FOR_TYPE[fitted.content_type])


def test_small_image_is_returned_unchanged() -> None:
    data = image_bytes((300, 200), "PNG")
    fitted = fit_image(data, "cat.png", 8 * MiB)
    assert fitted.data is data
    assert fitted == FittedImage(data, "image/png", "cat.png", False, 300, 200)


def test_small_unknown_data_is_returned_unchanged() -> None:
    fitted = fit_image(b"hello", "notes.txt", 8 * MiB)
    assert (fitted.data, fitted.content_type, fitted.reencoded) == (b"hello", "text/plain", False)
    assert (fitted.width, fitted.height) == (0, 0)


def test_big_noisy_png_with_alpha_fits() -> None:
    data = _noise_png((2048, 2048))
    limit = 10 * MiB
    assert len(data) > limit
    fitted = fit_image(data, "render.png", limit)
    assert len(fitted.data) <= limit
    assert fitted.reencoded
    assert (fitted.content_type, fitted.filename) == ("image/webp", "render.webp")
    im = _decode(fitted)
    assert im.mode == "RGBA"


def test_alpha_is_kept_in_webp() -> None:
    im = Image.new("RGBA", (1024, 1024), (255, 0, 0, 0))
    im.paste(Image.frombytes("RGBA", (512, 1024), os.urandom(512 * 1024 * 4)), (512, 0))
    im.putalpha(
        Image.linear_gradient("L").resize((1024, 1024)).point(lambda v: 0 if v < 128 else 255)
    )
    buf = io.BytesIO()
    im.save(buf, "PNG")
    fitted = fit_image(buf.getvalue(), "a.png", 300 * 1024)
    out = _decode(fitted)
    assert out.mode == "RGBA"
    assert out.getpixel((10, 10))[3] == 0  # transparent stays transparent
    assert out.getpixel((10, out.height - 10))[3] == 255


def test_jpeg_fallback_flattens_alpha_onto_white(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_webp_available", lambda: False)
    im = Image.new("RGBA", (1024, 1024), (255, 0, 0, 0))  # fully transparent red
    im.paste(Image.frombytes("RGBA", (512, 1024), os.urandom(512 * 1024 * 4)), (512, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    limit = 400 * 1024
    fitted = fit_image(buf.getvalue(), "dir/gen.final.PNG", limit)
    assert len(fitted.data) <= limit
    assert (fitted.content_type, fitted.filename) == ("image/jpeg", "gen.final.jpg")
    out = _decode(fitted)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((10, 10))
    assert min(r, g, b) > 240  # white, not red or black


def test_big_jpeg_is_reencoded() -> None:
    data = image_bytes((2048, 2048), "JPEG", noise=True, quality=98)
    limit = 1 * MiB
    assert len(data) > limit
    fitted = fit_image(data, "photo.jpeg", limit)
    assert len(fitted.data) <= limit and fitted.reencoded
    _consistent(fitted)
    im = _decode(fitted)
    assert im.width == im.height  # aspect ratio kept


def test_aspect_ratio_is_kept_when_scaling() -> None:
    data = _noise_png((1600, 400), "RGB")
    fitted = fit_image(data, "wide.png", 20 * 1024)
    assert fitted.width < 1600
    assert abs(fitted.width / fitted.height - 4) < 0.1
    _decode(fitted)


def test_too_wide_for_webp_uses_jpeg() -> None:
    data = _noise_png((17000, 8), "RGB")
    fitted = fit_image(data, "strip.png", 64 * 1024)
    assert len(fitted.data) <= 64 * 1024
    assert fitted.content_type == "image/jpeg"
    _consistent(fitted)
    _decode(fitted)


def test_palette_with_transparency_and_animation_first_frame() -> None:
    frames = [Image.frombytes("P", (400, 400), os.urandom(400 * 400), "raw") for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], transparency=0)
    data = buf.getvalue()
    fitted = fit_image(data, "anim.gif", 8 * 1024)
    assert len(fitted.data) <= 8 * 1024
    _consistent(fitted)
    assert _decode(fitted).mode == "RGBA"


def test_limits_and_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 8192"):
        fit_image(b"x", "a.png", 8191)
    with pytest.raises(ValueError, match="not an image"):
        fit_image(os.urandom(20_000), "a.png", 8192)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a....", "image/gif"),
        (b"GIF87a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"", None),
        (b"%PDF-1.7", None),
    ],
)
def test_sniff_content_type(data: bytes, expected: str | None) -> None:
    assert sniff_content_type(data) == expected


_FUZZ_PNG = _noise_png((256, 192), "RGBA")


@settings(max_examples=15, deadline=None, database=None)
@given(limit=st.integers(min_value=8 * 1024, max_value=len(_FUZZ_PNG) - 1))
def test_any_limit_is_respected(limit: int) -> None:
    fitted = fit_image(_FUZZ_PNG, "fuzz.png", limit)
    assert len(fitted.data) <= limit
    assert fitted.reencoded
    _consistent(fitted)
    _decode(fitted)
