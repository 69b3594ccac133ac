"""services.input_images: checking an image given as a model input, and sending it."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.errors import UserFacingError
from services.input_images import (
    DATA_URI_MAX_BYTES,
    InputImage,
    InputImageError,
    check_input_image,
    to_data_uri,
)
from services.replicate import ReplicateService
from tests.emulators.replicate import FLUX_DEV, ReplicateEmulator

MiB = 1024 * 1024


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def picture(size: tuple[int, int] = (64, 32), mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size)
    image.paste(Image.linear_gradient("L").resize(size).convert(mode), (0, 0))
    return image


def decoded(result: InputImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    assert image.size == (result.width, result.height)
    assert Image.MIME[image.format] == result.content_type
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    real = encode(Image.new("RGB", (1, 1)), "PNG")
    ihdr = struct.pack(">II", width, height) + real[24:29]
    chunk = b"IHDR" + ihdr
    return (
        real[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + real[33:]
    )


# ----------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type"),
    [
        ("PNG", "RGB", "image/png"),
        ("PNG", "RGBA", "image/png"),
        ("PNG", "P", "image/png"),
        ("JPEG", "RGB", "image/jpeg"),
        ("JPEG", "L", "image/jpeg"),
        ("WEBP", "RGB", "image/webp"),
        ("WEBP", "RGBA", "image/webp"),
    ],
)
def test_plain_images_are_sent_as_they_are(fmt: str, mode: str, content_type: str) -> None:
    data = encode(picture(mode=mode), fmt)
    result = check_input_image(data)
    assert result.data is data and not result.reencoded
    assert (result.content_type, result.width, result.height) == (content_type, 64, 32)


def test_an_animation_sends_its_first_frame_as_png() -> None:
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "blue", "green")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    result = check_input_image(data)
    assert result.reencoded and result.content_type == "image/png"
    assert decoded(result).convert("RGB").getpixel((5, 5)) == (255, 0, 0)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    exif[0x010F] = "PhoneMaker"
    data = encode(picture((60, 20)), "JPEG", exif=exif)
    result = check_input_image(data)
    assert result.reencoded and result.content_type == "image/jpeg"
    assert (result.width, result.height) == (20, 60)
    assert not decoded(result).getexif()


def test_metadata_alone_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x8825] = {1: "N"}  # a GPS block
    data = encode(picture(), "JPEG", exif=exif)
    result = check_input_image(data)
    assert result.reencoded and not decoded(result).getexif()


def test_big_images_are_shrunk_keeping_their_shape() -> None:
    data = encode(picture((3000, 1000)), "PNG")
    result = check_input_image(data, max_side=1024)
    assert (result.width, result.height) == (1024, 341)
    assert result.content_type == "image/png"
    decoded(result)


@pytest.mark.parametrize(
    ("image", "fmt", "content_type", "mode"),
    [
        (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", "image/jpeg", "RGB"),
        (Image.new("I;16", (16, 16), 4000), "PNG", "image/png", "RGB"),
    ],
)
def test_unusual_modes_are_converted(
    image: Image.Image, fmt: str, content_type: str, mode: str
) -> None:
    result = check_input_image(encode(image, fmt))
    assert result.reencoded and result.content_type == content_type
    assert decoded(result).mode == mode


def test_transparency_keeps_png() -> None:
    exif = Image.Exif()
    exif[0x0112] = 3
    image = picture(mode="RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    result = check_input_image(encode(image, "WEBP", exif=exif))
    assert result.content_type == "image/png" and decoded(result).mode == "RGBA"


# ----------------------------------------------------------------------- refused


def refused(data: bytes, **limits: int) -> InputImageError:
    with pytest.raises(InputImageError) as info:
        check_input_image(data, **limits)
    assert isinstance(info.value, UserFacingError)
    return info.value


def test_too_large() -> None:
    error = refused(b"\0" * (30 * MiB), max_bytes=20 * MiB)
    assert error.user_message == "The image is too large (30 MB > 20 MB)."
    assert error.reason == "too_large"
    small = refused(b"\0" * (3 * MiB // 2), max_bytes=MiB)
    assert small.user_message == "The image is too large (1.5 MB > 1.0 MB)."


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (b"", "empty", "That file is empty."),
        (b"hello world", "not_image", "That file is not an image (PNG, JPEG, WebP or GIF)."),
        (b"PK\x03\x04" + bytes(range(40)), "not_image", "That file is not an image"),
        (b"%PDF-1.7\n", "unsupported", "PDF files are not supported; send a PNG"),
        (b"\0\0\0\x18ftypheic" + b"\0" * 20, "unsupported", "HEIC files are not supported"),
    ],
    ids=["empty", "text", "zip", "pdf", "heic"],
)
def test_not_images(data: bytes, reason: str, message: str) -> None:
    error = refused(data)
    assert error.reason == reason
    assert error.user_message.startswith(message)


def test_bmp_is_refused() -> None:
    error = refused(encode(picture(), "BMP"))
    assert error.reason == "unsupported" and "BMP" in error.user_message


def test_damaged_images() -> None:
    whole = encode(picture((200, 200)), "PNG")
    assert refused(whole[: len(whole) // 2]).reason == "unreadable"
    jpeg = encode(picture((200, 200)), "JPEG")
    error = refused(jpeg[:200])
    assert error.user_message == "That image could not be read; it may be damaged."


def test_pixel_limit_is_read_from_the_header_before_decoding() -> None:
    error = refused(png_claiming(5000, 5000), max_pixels=10_000_000)
    assert error.reason == "too_many_pixels"
    assert error.user_message == (
        "The image has too many pixels (5000×5000; at most 10 megapixels)."
    )


def test_decompression_bombs_are_refused() -> None:
    error = refused(png_claiming(50_000, 50_000), max_pixels=10**12)
    assert error.reason == "too_many_pixels"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        check_input_image(b"x", max_side=0)


_VALID = [encode(picture((40, 30)), fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF")]


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    base=st.sampled_from(_VALID),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), max_size=6),
)
def test_damaged_bytes_only_ever_give_a_clear_refusal(
    base: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(base[: max(cut, 12)] if cut < len(base) else base)
    for index, value in flips:
        if index < len(data):
            data[index] = value
    try:
        result = check_input_image(bytes(data))
    except InputImageError:
        return
    decoded(result)


# ----------------------------------------------------------------------- sending


def test_data_uri() -> None:
    data = encode(picture(), "PNG")
    result = check_input_image(data)
    uri = result.data_uri()
    assert uri == to_data_uri(data, "image/png")
    assert base64.b64decode(uri.split(",", 1)[1]) == data
    assert result.fits_data_uri and result.filename == "input.png"
    big = InputImage(b"\0" * (DATA_URI_MAX_BYTES + 1), "image/jpeg", 1, 1, True)
    assert not big.fits_data_uri and big.filename == "input.jpg"


async def test_file_input_inline_or_uploaded(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    """Small images go inline, big ones through the Files API; either way the model gets
    exactly the checked bytes."""
    small = check_input_image(encode(picture(), "PNG"))
    inline = await replicate_service.file_input(small.data, content_type=small.content_type)
    assert inline.startswith("data:image/png;base64,")
    noise = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
    big = check_input_image(encode(noise, "PNG"))
    assert not big.fits_data_uri
    url = await replicate_service.file_input(
        big.data, content_type=big.content_type, filename=big.filename
    )
    assert url.startswith(f"{replicate_emu.base_url}/v1/files/")
    assert replicate_emu.counts["files_created"] == 1

    for value, image in ((inline, small), (url, big)):
        await replicate_service.generate(FLUX_DEV, "a fox", {"image": value})
        assert replicate_emu.received_image() == image.data
