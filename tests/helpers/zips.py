"""Build training zips (good and bad) for tests.

Typical use::

    from tests.helpers.zips import Entry, image_bytes, make_zip, valid_training_zip

    good = valid_training_zip(tmp_path / "good.zip", n=3)
    bad = make_zip(tmp_path / "bad.zip", [
        Entry("a.jpg", image_bytes()),
        traversal_entry(),
        symlink_entry("link.png"),
        encrypted_entry("secret.jpg"),
        nested_zip_entry("more.zip"),
        bomb_entry("bomb.png"),
        fake_gif_as_png("fake.png"),
    ])

Everything is written only to the paths given. Entries whose bytes cannot be produced by
``zipfile`` alone (encrypted flag, lying sizes) are patched in the finished file.
"""

from __future__ import annotations

import io
import os
import random
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = [
    "Entry",
    "bomb_entry",
    "caption_entry",
    "corrupt_png_pixels",
    "encrypted_entry",
    "fake_gif_as_png",
    "image_bytes",
    "image_entry",
    "junk_entries",
    "make_zip",
    "nested_zip_entry",
    "not_a_zip",
    "patch_entry_header",
    "png_bytes",
    "symlink_entry",
    "traversal_entry",
    "truncated_jpeg_entry",
    "valid_training_zip",
    "zip_bytes",
]


@dataclass
class Entry:
    """One member of a test zip.

    ``symlink`` stores a Unix symlink (``data`` is the link target); ``encrypted`` sets the
    "encrypted" flag bit without encrypting anything; ``declared_size`` rewrites the
    uncompressed size recorded in both headers (a lying entry); ``unix_mode`` sets the file
    type/permission bits stored in ``external_attr``.
    """

    name: str
    data: bytes = b""
    compress_type: int = zipfile.ZIP_DEFLATED
    symlink: bool = False
    encrypted: bool = False
    declared_size: int | None = None
    unix_mode: int | None = None
    is_dir: bool = False


def image_bytes(
    size: tuple[int, int] = (768, 768),
    fmt: str = "JPEG",
    *,
    mode: str = "RGB",
    noise: bool = False,
    seed: int = 0,
    quality: int = 90,
) -> bytes:
    """Encode an image of ``size`` in ``fmt`` (JPEG, PNG, WEBP, GIF, BMP...).

    By default a cheap smooth gradient (small files); ``noise=True`` gives incompressible pixels.
    """
    w, h = size
    if noise:
        rng = random.Random(seed)
        im = Image.frombytes(mode, size, rng.randbytes(w * h * len(mode)))
    else:
        im = Image.linear_gradient("L").resize(size).convert(mode)
        if seed:
            im = im.rotate(seed % 360)
    buf = io.BytesIO()
    options = {"quality": quality} if fmt.upper() in ("JPEG", "WEBP") else {}
    if fmt.upper() == "JPEG" and mode not in ("RGB", "L", "CMYK"):
        im = im.convert("RGB")
    im.save(buf, fmt, **options)
    return buf.getvalue()


def png_bytes(size: tuple[int, int] = (768, 768), **kwargs: object) -> bytes:
    return image_bytes(size, "PNG", **kwargs)  # type: ignore[arg-type]


def image_entry(
    name: str, size: tuple[int, int] = (768, 768), fmt: str | None = None, **kwargs: object
) -> Entry:
    """An image entry whose format follows the extension unless ``fmt`` is given."""
    if fmt is None:
        ext = Path(name).suffix.lower()
        fmt = {".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP"}.get(ext, "JPEG")
    return Entry(name, image_bytes(size, fmt, **kwargs))  # type: ignore[arg-type]


def caption_entry(name: str, text: str = "a photo of TOK") -> Entry:
    return Entry(name, text.encode())


def traversal_entry(name: str = "photos/../../etc/passwd", data: bytes = b"root:x:0:0") -> Entry:
    return Entry(name, data)


def symlink_entry(name: str = "link.png", target: str = "/etc/passwd") -> Entry:
    return Entry(name, target.encode(), symlink=True)


def encrypted_entry(name: str = "secret.jpg", data: bytes | None = None) -> Entry:
    return Entry(name, image_bytes() if data is None else data, encrypted=True)


def zip_bytes(entries: Sequence[Entry]) -> bytes:
    """A whole zip as bytes (for nesting or for writing elsewhere)."""
    buf = io.BytesIO()
    _write(buf, entries)
    return _patch(bytearray(buf.getvalue()), entries)


def nested_zip_entry(name: str = "more.zip") -> Entry:
    return Entry(name, zip_bytes([Entry("inner.jpg", image_bytes((64, 64)))]))


def bomb_entry(name: str = "bomb.png", size: int = 20 * 1024 * 1024) -> Entry:
    """``size`` zero bytes: compresses about 1000:1."""
    return Entry(name, bytes(size))


def fake_gif_as_png(name: str = "fake.png") -> Entry:
    return Entry(name, image_bytes((64, 64), "GIF"))


def truncated_jpeg_entry(name: str = "cut.jpg", size: tuple[int, int] = (768, 768)) -> Entry:
    data = image_bytes(size, noise=True)
    return Entry(name, data[: len(data) // 2])


def corrupt_png_pixels(png: bytes) -> bytes:
    """Garble the compressed pixel data of a PNG but keep every chunk CRC valid.

    Structural checks accept the result; only decoding the pixels reveals the damage.
    """
    out = bytearray(png)
    pos = 8
    while pos + 8 <= len(out):
        length = struct.unpack(">I", out[pos : pos + 4])[0]
        ctype = bytes(out[pos + 4 : pos + 8])
        if ctype == b"IDAT":
            start = pos + 8 + 2  # keep the zlib header
            out[start : pos + 8 + length] = bytes(0xFF ^ b for b in out[start : pos + 8 + length])
            crc = zlib.crc32(out[pos + 4 : pos + 8 + length]) & 0xFFFFFFFF
            out[pos + 8 + length : pos + 12 + length] = struct.pack(">I", crc)
            return bytes(out)
        pos += 12 + length
    raise ValueError("no IDAT chunk")


def junk_entries() -> list[Entry]:
    """Files that operating systems add to zips on their own."""
    return [
        Entry("__MACOSX/", is_dir=True),
        Entry("__MACOSX/._a.jpg", b"\x00\x05\x16\x07resource fork"),
        Entry(".DS_Store", b"\x00\x00\x00\x01Bud1"),
        Entry("photos/Thumbs.db", b"\xd0\xcf\x11\xe0"),
        Entry("photos/desktop.ini", b"[.ShellClassInfo]"),
        Entry("photos/._b.jpg", b"\x00\x05\x16\x07"),
        Entry("photos/", is_dir=True),
    ]


def not_a_zip(path: str | os.PathLike[str], data: bytes | None = None) -> Path:
    """A file named like a zip that is not one (a JPEG by default)."""
    path = Path(path)
    path.write_bytes(image_bytes((32, 32)) if data is None else data)
    return path


def make_zip(path: str | os.PathLike[str], entries: Iterable[Entry]) -> Path:
    """Write ``entries`` to a zip at ``path`` and return the path."""
    entries = list(entries)
    path = Path(path)
    path.write_bytes(zip_bytes(entries))
    return path


def valid_training_zip(
    path: str | os.PathLike[str],
    n: int = 3,
    size: tuple[int, int] = (768, 768),
    *,
    captions: bool = True,
    fmt: str = "JPEG",
    folder: str = "",
) -> Path:
    """``n`` images (``img_000.jpg``…) with matching captions: passes the default checks."""
    ext = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[fmt.upper()]
    prefix = f"{folder.strip('/')}/" if folder else ""
    entries: list[Entry] = []
    for i in range(n):
        entries.append(Entry(f"{prefix}img_{i:03d}{ext}", image_bytes(size, fmt, seed=i)))
        if captions:
            entries.append(caption_entry(f"{prefix}img_{i:03d}.txt", f"a photo of TOK, #{i}"))
    return make_zip(path, entries)


# --------------------------------------------------------------------------------------------


def _write(fileobj: io.BytesIO, entries: Sequence[Entry]) -> None:
    with warnings.catch_warnings(), zipfile.ZipFile(fileobj, "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are wanted sometimes
        for e in entries:
            info = zipfile.ZipInfo(e.name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.compress_type = e.compress_type
            if e.is_dir:
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                info.compress_type = zipfile.ZIP_STORED
            elif e.symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
            if e.unix_mode is not None:
                info.external_attr = e.unix_mode << 16
            zf.writestr(info, e.data)


def _patch(buf: bytearray, entries: Sequence[Entry]) -> bytes:
    for e in entries:
        if e.encrypted:
            patch_entry_header(buf, e.name, set_flags=0x1)
        if e.declared_size is not None:
            patch_entry_header(buf, e.name, file_size=e.declared_size)
    return bytes(buf)


def patch_entry_header(
    buf: bytearray,
    name: str,
    *,
    set_flags: int = 0,
    file_size: int | None = None,
    compress_size: int | None = None,
    crc: int | None = None,
) -> None:
    """Rewrite fields of ``name``'s local and central headers in a finished zip, in place."""
    raw = name.encode("utf-8")
    local = zipfile.ZipFile(io.BytesIO(bytes(buf))).getinfo(name).header_offset
    # Find this entry's central record: the one whose name field equals ``raw``.
    central = -1
    pos = 0
    while (pos := bytes(buf).find(b"PK\x01\x02", pos)) >= 0:
        nlen = struct.unpack_from("<H", buf, pos + 28)[0]
        if bytes(buf[pos + 46 : pos + 46 + nlen]) == raw:
            central = pos
            break
        pos += 4
    if central < 0:
        raise ValueError(f"no central record for {name!r}")
    # (local offset, central offset) of each field
    for value, lo, co, fmt in (
        (crc, 14, 16, "<I"),
        (compress_size, 18, 20, "<I"),
        (file_size, 22, 24, "<I"),
    ):
        if value is not None:
            struct.pack_into(fmt, buf, local + lo, value)
            struct.pack_into(fmt, buf, central + co, value)
    if set_flags:
        for off in (local + 6, central + 8):
            flags = struct.unpack_from("<H", buf, off)[0]
            struct.pack_into("<H", buf, off, flags | set_flags)
