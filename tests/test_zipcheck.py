"""Tests for services.zipcheck: every rule, its user-facing message, and fuzzing."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import struct
import sys
import threading
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.zipcheck import (
    ZipCheckError,
    ZipLimits,
    ZipReport,
    ZipTooLarge,
    ZipUnreadable,
    check_zip,
    check_zip_async,
    download_to_file,
)
from services.zipcheck.archive import ArchiveChecker
from services.zipcheck.entries import EntryChecker
from services.zipcheck.reader import CHUNK
from services.zipcheck.report import fmt_bytes
from tests.helpers.zips import (
    Entry,
    bomb_entry,
    caption_entry,
    corrupt_png_pixels,
    encrypted_entry,
    fake_gif_as_png,
    image_bytes,
    image_entry,
    junk_entries,
    make_zip,
    nested_zip_entry,
    not_a_zip,
    patch_entry_header,
    png_bytes,
    symlink_entry,
    traversal_entry,
    truncated_jpeg_entry,
    valid_training_zip,
    zip_bytes,
)

# --------------------------------------------------------------------------------------------
# Watching for disk writes: check_zip must never create or modify files.


class _WriteWatch:
    active = False
    writes: list[tuple[str, object]] = []  # noqa: RUF012 - process-wide on purpose

    @classmethod
    def hook(cls, event: str, args: tuple[object, ...]) -> None:
        if not cls.active or threading.current_thread() is not _WriteWatch.thread:
            return
        if event == "open":
            _path, mode, flags = args
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writing = True
            if writing:
                cls.writes.append((event, args))
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.truncate", "shutil.copyfile"):
            cls.writes.append((event, args))

    thread: threading.Thread | None = None


sys.addaudithook(_WriteWatch.hook)


@contextmanager
def no_disk_writes() -> Iterator[None]:
    _WriteWatch.writes = []
    _WriteWatch.thread = threading.current_thread()
    _WriteWatch.active = True
    try:
        yield
    finally:
        _WriteWatch.active = False
    assert _WriteWatch.writes == []


def only(report: ZipReport) -> str:
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


def problem_for(report: ZipReport, name: str) -> str:
    hits = [p for p in report.problems if p.startswith(f"`{name}`:")]
    assert len(hits) == 1, report.problems
    return hits[0]


# --------------------------------------------------------------------------------------------
# Valid zips


def test_valid_zip_passes(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "ok.zip", n=3)
    with no_disk_writes():
        report = check_zip(path)
    assert report.ok
    assert report.problems == [] and report.warnings == []
    assert report.image_count == 3 and report.caption_count == 3
    assert report.total_uncompressed > 0
    assert report.message() == "✅ The zip looks good (3 images, 3 captions)."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.zip"]


def test_all_formats_folders_and_case_insensitive_extensions(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "mixed.zip",
        [
            Entry("set/A.JPG", image_bytes(fmt="JPEG")),
            Entry("set/b.jpeg", image_bytes(fmt="JPEG", seed=3)),
            Entry("set/c.PNG", image_bytes(fmt="PNG", mode="RGBA")),
            Entry("set/d.webp", image_bytes(fmt="WEBP")),
            Entry("set/e.jpg", image_bytes(fmt="JPEG"), compress_type=zipfile.ZIP_STORED),
            Entry("set/f.png", image_bytes(fmt="PNG"), compress_type=zipfile.ZIP_BZIP2),
            Entry("set/g.jpg", image_bytes(fmt="JPEG"), compress_type=zipfile.ZIP_LZMA),
            caption_entry("set/A.txt"),
            Entry("set/c.txt", "\ufeffune photo de TOK, été".encode()),
        ],
    )
    report = check_zip(path)
    assert report.ok, report.problems
    assert report.image_count == 7 and report.caption_count == 2


def test_junk_files_and_directories_are_skipped(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "mac.zip",
        [*junk_entries(), image_entry("photos/a.jpg"), caption_entry("photos/a.txt")],
    )
    report = check_zip(path)
    assert report.ok, report.problems
    assert report.skipped == [
        "__MACOSX/._a.jpg",
        ".DS_Store",
        "photos/Thumbs.db",
        "photos/desktop.ini",
        "photos/._b.jpg",
    ]
    assert report.image_count == 1


# --------------------------------------------------------------------------------------------
# Whole-file rules


@pytest.mark.parametrize(
    "data",
    [
        None,  # a JPEG renamed to .zip
        b"",
        b"just some text, renamed to .zip\n" * 10,
        b"PK\x03\x04" + b"\x00" * 100,  # zip magic, nothing behind it
        zip_bytes([image_entry("a.jpg")])[:-30],  # end of central directory cut off
    ],
)
def test_not_a_zip_is_the_single_problem(tmp_path: Path, data: bytes | None) -> None:
    path = not_a_zip(tmp_path / "fake.zip", data)
    report = check_zip(path, declared_size=500 * 1024 * 1024)
    assert not report.ok
    assert only(report).startswith("This file is not a zip archive")
    assert report.image_count == 0


def test_zip_too_large_by_declared_size(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "ok.zip", n=1)
    report = check_zip(path, declared_size=150 * 1024 * 1024)
    assert only(report) == "The zip is 150 MB; the limit is 100 MB."


def test_zip_too_large_by_real_size(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "ok.zip", n=2)
    report = check_zip(path, ZipLimits(max_zip_bytes=1024), declared_size=1)
    assert only(report).endswith("; the limit is 1 KB.")


def test_unreadable_path_raises_zip_check_error(tmp_path: Path) -> None:
    with pytest.raises(ZipUnreadable) as missing:
        check_zip(tmp_path / "missing.zip")
    assert "could not be opened" in missing.value.user_message
    with pytest.raises(ZipCheckError):
        check_zip(tmp_path)


def test_no_images(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "z.zip", [caption_entry("a.txt"), *junk_entries()])
    report = check_zip(path)
    assert only(report) == "The zip contains no images. Add at least 1 JPG, PNG or WebP image."
    assert report.warnings == [
        "`a.txt`: there is no image with the same name, so this caption will not be used."
    ]


def test_too_few_and_too_many_images(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "z.zip", n=3, size=(64, 64), captions=False)
    few = check_zip(path, ZipLimits(min_images=5, min_side_warning=0))
    assert only(few) == "The zip contains 3 images; at least 5 are needed."
    many = check_zip(path, ZipLimits(max_images=2, min_side_warning=0))
    assert only(many) == "The zip contains 3 images; the most allowed is 2."


def test_too_many_entries_from_end_record(tmp_path: Path) -> None:
    entries = [image_entry(f"{i}.jpg", (16, 16)) for i in range(12)]
    report = check_zip(make_zip(tmp_path / "z.zip", entries), ZipLimits(max_entries=10))
    assert only(report) == "The zip contains 12 files; the most allowed is 10."


def test_too_many_entries_when_end_record_lies(tmp_path: Path) -> None:
    buf = bytearray(zip_bytes([image_entry(f"{i}.jpg", (16, 16)) for i in range(12)]))
    eocd = buf.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", buf, eocd + 8, 2, 2)  # claims 2 entries
    path = tmp_path / "z.zip"
    path.write_bytes(buf)
    report = check_zip(path, ZipLimits(max_entries=10))
    assert only(report) == "The zip contains 12 files; the most allowed is 10."


# --------------------------------------------------------------------------------------------
# Entry names and metadata


@pytest.mark.parametrize(
    "name",
    ["photos/../../etc/passwd", "../a.jpg", "a/../../b.jpg", "..\\..\\win.jpg", "a\\..\\..\\b.jpg"],
)
def test_path_traversal(tmp_path: Path, name: str) -> None:
    path = make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), traversal_entry(name)])
    assert only(check_zip(path)) == f"`{name}`: paths that leave the archive are not allowed."


@pytest.mark.parametrize("name", ["/etc/passwd", "\\evil.jpg", "C:/evil.jpg", "c:\\evil.jpg"])
def test_absolute_paths(tmp_path: Path, name: str) -> None:
    path = make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), Entry(name, b"x")])
    assert only(check_zip(path)) == (
        f"`{name}`: absolute paths are not allowed; files must be stored inside the zip's folders."
    )


def test_control_characters_in_names(tmp_path: Path) -> None:
    buf = zip_bytes([image_entry("ok.jpg"), Entry("evil.jpg_.txt", b"x"), Entry("a\nb.jpg")])
    path = tmp_path / "z.zip"
    path.write_bytes(buf.replace(b"evil.jpg_.txt", b"evil.jpg\x00.txt"))
    control = "the name contains invisible control characters, which is not allowed."
    assert check_zip(path).problems == [f"`evil.jpg?.txt`: {control}", f"`a?b.jpg`: {control}"]


def test_symlinks_and_special_files(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "z.zip",
        [
            image_entry("ok.jpg"),
            symlink_entry("link.png", "/etc/passwd"),
            symlink_entry("__MACOSX/._link", "/"),  # junk is still checked: it gets extracted
            Entry("pipe.jpg", b"", unix_mode=0o010644),
        ],
    )
    report = check_zip(path)
    assert report.problems == [
        "`link.png`: links (symlinks) are not allowed; put the real file in the zip instead.",
        "`__MACOSX/._link`: links (symlinks) are not allowed; put the real file in the zip "
        "instead.",
        "`pipe.jpg`: is a special file, not a normal file, and is not allowed.",
    ]


def test_encrypted_entries(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), encrypted_entry("secret.jpg")])
    assert only(check_zip(path)) == (
        "`secret.jpg`: is password-protected. Please create the zip without a password."
    )


def test_unsupported_compression_method(tmp_path: Path) -> None:
    buf = bytearray(zip_bytes([image_entry("ok.jpg"), image_entry("d64.jpg")]))
    local = zipfile.ZipFile(io.BytesIO(bytes(buf))).getinfo("d64.jpg").header_offset
    central = buf.rfind(b"PK\x01\x02")  # the last central record is d64.jpg's
    struct.pack_into("<H", buf, local + 8, 9)  # Deflate64
    struct.pack_into("<H", buf, central + 10, 9)
    path = tmp_path / "z.zip"
    path.write_bytes(buf)
    assert only(check_zip(path)) == (
        "`d64.jpg`: uses a compression method that is not supported. Please create the zip "
        "with a standard zip tool and default settings."
    )


@pytest.mark.parametrize(
    "name", ["more.zip", "a.tar", "a.tar.gz", "a.gz", "a.tgz", "a.7z", "a.rar", "a.bz2", "a.xz"]
)
def test_nested_archives_by_name(tmp_path: Path, name: str) -> None:
    path = make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), Entry(name, b"data")])
    assert only(check_zip(path)) == (
        f"`{name}`: archives inside the zip are not allowed; put the images directly in the zip."
    )


def test_nested_archives_by_content(tmp_path: Path) -> None:
    inner = nested_zip_entry().data
    path = make_zip(
        tmp_path / "z.zip",
        [
            image_entry("ok.jpg"),
            Entry("sneaky.jpg", inner),
            Entry("ok.txt", gzip.compress(b"a photo of TOK")),
        ],
    )
    report = check_zip(path)
    nested = "archives inside the zip are not allowed; put the images directly in the zip."
    assert report.problems == [f"`sneaky.jpg`: {nested}", f"`ok.txt`: {nested}"]


def test_other_file_types_are_named(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "z.zip",
        [image_entry("ok.jpg"), Entry("notes.pdf", b"%PDF-1.4"), Entry("README", b"hi")],
    )
    allowed = "The zip may only contain images (JPG, PNG, WebP) and .txt captions."
    assert check_zip(path).problems == [
        f"`notes.pdf`: PDF files are not allowed. {allowed}",
        f"`README`: files without an extension are not allowed. {allowed}",
    ]


def test_duplicate_names_case_insensitive(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "z.zip",
        [image_entry("Photo.jpg"), image_entry("photo.JPG"), image_entry("photo.JPG")],
    )
    report = check_zip(path)
    dup = (
        "`photo.JPG`: another file in the zip has the same name (names must differ by more "
        "than upper/lower case)."
    )
    assert report.problems == [dup, dup]
    assert report.image_count == 1


# --------------------------------------------------------------------------------------------
# Zip bombs and bounded reading


def test_bomb_entry_by_ratio_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), bomb_entry("bomb.png")])
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: object, *args: object, **kwargs: object) -> object:
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    report = check_zip(path)
    assert "bomb.png" not in opened
    assert report.problems[0] == (
        "The zip's contents are compressed far more than images can be, which is how zip bombs "
        "work."
    )
    assert problem_for(report, "bomb.png").startswith("`bomb.png`: shrinks 1,0")
    assert problem_for(report, "bomb.png").endswith(
        "times when compressed, which is how zip bombs work, so it was not opened."
    )


def test_total_uncompressed_limit_is_declared_and_enforced(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "z.zip", n=4, captions=False)
    cap = zipfile.ZipFile(path).infolist()[0].file_size * 2 + 10
    report = check_zip(path, ZipLimits(max_total_uncompressed=cap))
    assert report.problems[0].startswith("Unpacked, the files would take ")
    assert report.problems[0].endswith("(This can be a sign of a zip bomb.)")
    assert report.problems[-1] == (
        f"Checking stopped: the unpacked files went over the {fmt_bytes(cap)} limit. "
        "(This can be a sign of a zip bomb.)"
    )


def test_overlapping_entries_are_flagged(tmp_path: Path) -> None:
    data = image_bytes((64, 64))
    buf = bytearray(zip_bytes([Entry("a.jpg", data, compress_type=zipfile.ZIP_STORED)]))
    # Append a second central record pointing at the same local data (a "better zip bomb").
    eocd = buf.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", buf, eocd + 12)
    record = bytearray(buf[cd_offset : cd_offset + cd_size])
    record[46:51] = b"b.jpg"
    new = buf[:eocd] + record + buf[eocd:]
    new_eocd = new.rfind(b"PK\x05\x06")
    struct.pack_into("<HHI", new, new_eocd + 8, 2, 2, cd_size * 2)
    path = tmp_path / "z.zip"
    path.write_bytes(new)
    report = check_zip(path)
    assert "Several files in the zip share the same data, which is how zip bombs work." in (
        report.problems
    )


def test_lying_entry_is_read_only_up_to_its_declared_size(tmp_path: Path) -> None:
    actual = bytes(50 * 1024 * 1024)  # 50 MB of zeros, ~50 KB compressed
    declared = 1000
    buf = bytearray(zip_bytes([image_entry("ok.jpg"), Entry("liar.jpg", actual)]))
    patch_entry_header(buf, "liar.jpg", file_size=declared, crc=zlib.crc32(actual[:declared]))
    path = tmp_path / "z.zip"
    path.write_bytes(buf)
    tracemalloc.start()
    try:
        report = check_zip(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1024 * 1024
    assert (
        only(report) == "`liar.jpg`: is not a valid image (it is damaged or is not really a JPG)."
    )


def test_lying_entry_with_original_crc_is_a_checksum_problem(tmp_path: Path) -> None:
    buf = bytearray(zip_bytes([image_entry("ok.jpg"), Entry("liar.jpg", bytes(5_000_000))]))
    patch_entry_header(buf, "liar.jpg", file_size=1000)
    path = tmp_path / "z.zip"
    path.write_bytes(buf)
    assert only(check_zip(path)) == (
        "`liar.jpg`: could not be read: the zip is damaged (checksum mismatch)."
    )


def test_reader_stops_when_an_entry_yields_more_than_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: even a reader that ignores the declared size is cut off."""
    path = make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), image_entry("big.jpg")])
    served = 0

    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            nonlocal served
            served += n
            return b"\xff" * n

    real_open = zipfile.ZipFile.open

    def fake_open(self: zipfile.ZipFile, info: zipfile.ZipInfo, *a: object, **k: object) -> object:
        return Endless() if info.filename == "big.jpg" else real_open(self, info, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", fake_open)
    report = check_zip(path)
    assert only(report) == (
        "`big.jpg`: contains more data than the zip says it does, so it was not read further "
        "(the zip is damaged or was made to trick the checker)."
    )
    assert served <= CHUNK


def test_crc_mismatch(tmp_path: Path) -> None:
    data = image_bytes((64, 64))
    buf = bytearray(zip_bytes([Entry("a.jpg", data, compress_type=zipfile.ZIP_STORED)]))
    offset = buf.find(data) + len(data) // 2
    buf[offset] ^= 0x55
    path = tmp_path / "z.zip"
    path.write_bytes(buf)
    assert only(check_zip(path)) == (
        "`a.jpg`: could not be read: the zip is damaged (checksum mismatch)."
    )


# --------------------------------------------------------------------------------------------
# Image contents


def test_undecodable_and_mismatched_images(tmp_path: Path) -> None:
    png = png_bytes((64, 64))
    path = make_zip(
        tmp_path / "z.zip",
        [
            image_entry("ok.jpg"),
            Entry("random.jpg", os.urandom(2000)),
            truncated_jpeg_entry("cut.jpg"),
            Entry("cut.png", png[: len(png) - 20]),
            Entry("cut.webp", image_bytes((64, 64), "WEBP")[:-10]),
            fake_gif_as_png("fake.png"),
            Entry("photo.png", image_bytes((64, 64), "JPEG")),
            Entry("pic.jpg", image_bytes((64, 64), "BMP")),
        ],
    )
    report = check_zip(path)
    damaged = "is damaged or incomplete and cannot be used."
    assert report.problems == [
        "`random.jpg`: is not a valid image (it is damaged or is not really a JPG).",
        f"`cut.jpg`: {damaged}",
        f"`cut.png`: {damaged}",
        f"`cut.webp`: {damaged}",
        "`fake.png`: is really a GIF image, not PNG. Only JPG, PNG and WebP images are "
        "supported; please convert it.",
        "`photo.png`: is really a JPG image but is named .png. Rename it to end in .jpg.",
        "`pic.jpg`: is really a BMP image, not JPG. Only JPG, PNG and WebP images are "
        "supported; please convert it.",
    ]
    assert report.image_count == 1


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def test_decompression_bombs(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "z.zip",
        [
            image_entry("ok.jpg"),
            Entry("huge.png", _png_header_only(20_000, 20_000)),  # Pillow refuses to open
            Entry("big.png", _png_header_only(9_000, 8_000)),  # over our limit only
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        report = check_zip(path)
    assert report.problems == [
        "`huge.png`: is 20000 × 20000 pixels (400 megapixels); images may have at most "
        "64 megapixels.",
        "`big.png`: is 9000 × 8000 pixels (72 megapixels); images may have at most 64 megapixels.",
    ]


def test_decompression_bomb_warning_as_error_is_a_problem(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "z.zip", [Entry("w.png", _png_header_only(10_000, 10_000))])
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        report = check_zip(path)
    assert only(report).startswith("`w.png`: is 10000 × 10000 pixels")


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "z.zip", n=1, size=(768, 768))
    assert only(check_zip(path, ZipLimits(max_image_pixels=100_000))) == (
        "`img_000.jpg`: is 768 × 768 pixels (0.6 megapixels); images may have at most "
        "0.1 megapixels."
    )


def test_image_byte_limit(tmp_path: Path) -> None:
    path = valid_training_zip(tmp_path / "z.zip", n=1)
    assert only(check_zip(path, ZipLimits(max_image_bytes=1024))).endswith(
        "; each image may be at most 1 KB."
    )


def test_corrupt_pixel_data_needs_decode_pixels(tmp_path: Path) -> None:
    bad = corrupt_png_pixels(png_bytes((600, 600), noise=True))
    path = make_zip(tmp_path / "z.zip", [Entry("pix.png", bad), image_entry("ok.jpg")])
    assert check_zip(path).ok  # every chunk CRC is valid: structurally fine
    report = check_zip(path, ZipLimits(decode_pixels=True))
    assert only(report) == "`pix.png`: is damaged or incomplete and cannot be used."
    good = valid_training_zip(tmp_path / "good.zip", n=2)
    assert check_zip(good, ZipLimits(decode_pixels=True)).ok


def test_small_images_warning_is_aggregated(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "z.zip",
        [
            image_entry("a.jpg", (300, 900)),
            image_entry("big.jpg", (512, 512)),
            image_entry("b.png", (100, 100)),
            image_entry("c.webp", (800, 400)),
        ],
    )
    report = check_zip(path)
    assert report.ok
    assert report.warnings == [
        "3 images are smaller than 512 px on the short side: `a.jpg`, `b.png`, `c.webp`. They "
        "are accepted, but training works best with images of at least 512 px."
    ]
    one = check_zip(make_zip(tmp_path / "one.zip", [image_entry("s.jpg", (64, 64))]))
    assert one.warnings[0].startswith("1 image is smaller than 512 px on the short side: `s.jpg`.")


# --------------------------------------------------------------------------------------------
# Captions


def test_caption_rules(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "z.zip",
        [
            image_entry("a.jpg"),
            image_entry("dir/b.png"),
            image_entry("c.jpg"),
            image_entry("d.jpg"),
            caption_entry("a.txt", "TOK on a beach"),
            caption_entry("dir/B.TXT", "TOK in a forest"),
            caption_entry("orphan.txt"),
            caption_entry("b.txt"),  # b.png lives in dir/, not here
            Entry("c.txt", b"\xff\xfe\x00T\x00O\x00K"),  # UTF-16
            Entry("d.txt", b"x" * (10 * 1024 + 1)),
        ],
    )
    report = check_zip(path)
    assert report.problems == [
        "`c.txt`: is not plain text. Save captions as UTF-8 text files.",
        "`d.txt`: captions may be at most 10 KB (this one is 10,241 bytes).",
    ]
    assert report.warnings == [
        "`orphan.txt`: there is no image with the same name, so this caption will not be used.",
        "`b.txt`: there is no image with the same name, so this caption will not be used.",
    ]
    assert report.caption_count == 2
    assert report.image_count == 4
    assert not report.ok


# --------------------------------------------------------------------------------------------
# One report for everything; messages


def _everything_wrong(tmp_path: Path) -> Path:
    return make_zip(
        tmp_path / "bad.zip",
        [
            image_entry("good.jpg"),
            traversal_entry(),
            symlink_entry("link.png"),
            encrypted_entry("secret.jpg"),
            nested_zip_entry("more.zip"),
            bomb_entry("bomb.png"),
            fake_gif_as_png("fake.png"),
            Entry("notes.pdf", b"%PDF-1.4"),
            image_entry("GOOD.jpg"),
            truncated_jpeg_entry("cut.jpg"),
            Entry("cap.txt", b"\xff\xff"),
            caption_entry("lonely.txt"),
            image_entry("tiny.png", (50, 50)),
            *junk_entries(),
        ],
    )


def test_all_problems_are_listed_in_one_report(tmp_path: Path) -> None:
    report = check_zip(_everything_wrong(tmp_path))
    assert not report.ok
    names = [
        "photos/../../etc/passwd",
        "link.png",
        "secret.jpg",
        "more.zip",
        "bomb.png",
        "fake.png",
        "notes.pdf",
        "GOOD.jpg",
        "cut.jpg",
        "cap.txt",
    ]
    entry_problems = [p for p in report.problems if p.startswith("`")]
    assert [p.split("`")[1] for p in entry_problems] == names
    assert len(report.skipped) == 5
    assert any(w.startswith("`lonely.txt`") for w in report.warnings)
    assert any("`tiny.png`" in w for w in report.warnings)
    message = report.message()
    assert message.startswith("❌ This zip can't be used for training.")
    for problem in report.problems:
        assert f"• {problem}" in message
    assert "⚠️ Notes:" in message
    assert message.index("⚠️ Notes:") > message.index(report.problems[-1])
    assert "Traceback" not in message


def test_message_is_truncated_with_a_count(tmp_path: Path) -> None:
    entries = [Entry(f"file_{i:03d}.exe", b"MZ") for i in range(80)]
    report = check_zip(make_zip(tmp_path / "z.zip", [image_entry("ok.jpg"), *entries]))
    assert len(report.problems) == 80
    message = report.message()
    assert len(message) <= 1900
    shown = message.count("\n• ")
    assert message.endswith(f"\n…and {80 - shown} more")
    assert 10 < shown < 80


@settings(max_examples=60, deadline=None, database=None)
@given(
    problems=st.lists(st.text(min_size=0, max_size=300), max_size=30),
    warnings_=st.lists(st.text(max_size=300), max_size=10),
    limit=st.integers(min_value=1, max_value=3000),
)
def test_message_never_exceeds_limit(problems: list[str], warnings_: list[str], limit: int) -> None:
    report = ZipReport(
        ok=not problems,
        problems=problems,
        warnings=warnings_,
        image_count=1,
        caption_count=0,
        total_uncompressed=0,
        skipped=[],
    )
    message = report.message(limit=limit)
    assert len(message) <= limit
    if (
        len(problems) + len(warnings_)
        and limit >= 1900
        and all(len(x) < 100 for x in problems + warnings_)
    ):
        assert all(f"• {p}" in message for p in problems[:10])


def test_unexpected_errors_become_entry_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(EntryChecker, "check_image", boom)
    path = valid_training_zip(tmp_path / "z.zip", n=2, captions=False)
    report = check_zip(path)
    assert report.problems == [
        "`img_000.jpg`: could not be read (corrupt data).",
        "`img_001.jpg`: could not be read (corrupt data).",
    ]


def test_unexpected_global_error_becomes_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(ArchiveChecker, "classify", boom)
    report = check_zip(valid_training_zip(tmp_path / "z.zip", n=1))
    assert only(report) == "The zip could not be checked completely because it is damaged."


def test_names_are_shown_safely(tmp_path: Path) -> None:
    long = "x" * 300 + ".pdf"
    path = make_zip(
        tmp_path / "z.zip", [image_entry("ok.jpg"), Entry("a`b.pdf", b"x"), Entry(long, b"x")]
    )
    report = check_zip(path)
    assert report.problems[0].startswith("`a'b.pdf`: PDF files")
    assert "…" in report.problems[1] and len(report.problems[1].split("`")[1]) <= 120


async def test_check_zip_async(tmp_path: Path) -> None:
    report = await check_zip_async(valid_training_zip(tmp_path / "z.zip", n=2), ZipLimits())
    assert report.ok and report.image_count == 2


# --------------------------------------------------------------------------------------------
# download_to_file


async def _chunks(parts: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise ConnectionError("network went away")
        await asyncio.sleep(0)
        yield part


async def test_download_to_file_writes_everything(tmp_path: Path) -> None:
    parts = [os.urandom(300_000) for _ in range(8)]
    dest = tmp_path / "dl.zip"
    n = await download_to_file(_chunks(parts), dest, max_bytes=10 * 1024 * 1024)
    assert n == sum(map(len, parts))
    assert dest.read_bytes() == b"".join(parts)


async def test_download_to_file_stops_at_limit_and_deletes(tmp_path: Path) -> None:
    dest = tmp_path / "dl.zip"
    seen = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal seen
        for _ in range(100):
            seen += 1
            yield b"x" * 1024 * 1024

    with pytest.raises(ZipTooLarge) as err:
        await download_to_file(counting(), dest, max_bytes=3 * 1024 * 1024)
    assert isinstance(err.value, ZipCheckError)
    assert err.value.user_message == "The file is larger than the 3 MB limit."
    assert seen == 4
    assert not dest.exists()


async def test_download_to_file_deletes_partial_file_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "dl.zip"
    with pytest.raises(ConnectionError):
        await download_to_file(_chunks([b"a" * 2_000_000] * 3, fail_after=2), dest, 10**9)
    assert not dest.exists()


# --------------------------------------------------------------------------------------------
# Fuzzing: only ZipReport or ZipCheckError, never a write


def _fuzz_check(path: Path) -> None:
    with no_disk_writes():
        try:
            report = check_zip(path, declared_size=path.stat().st_size)
        except ZipCheckError:
            return
    assert isinstance(report, ZipReport)
    assert report.ok == (not report.problems)
    assert len(report.message()) <= 1900


_SEED_ZIP = zip_bytes(
    [
        Entry("a.jpg", image_bytes((24, 24))),
        Entry("b.png", image_bytes((16, 16), "PNG")),
        Entry("c.webp", image_bytes((16, 16), "WEBP"), compress_type=zipfile.ZIP_STORED),
        caption_entry("a.txt"),
        Entry("__MACOSX/._a.jpg", b"junk"),
        Entry("sub/", is_dir=True),
    ]
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "random.zip"
    path.write_bytes(data)
    _fuzz_check(path)


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_SEED_ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=12
    ),
    cut=st.one_of(st.none(), st.integers(0, len(_SEED_ZIP))),
    tail_bias=st.booleans(),
)
def test_fuzz_mutated_valid_zip(
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[int, int]],
    cut: int | None,
    tail_bias: bool,
) -> None:
    buf = bytearray(_SEED_ZIP)
    for pos, value in edits:
        if tail_bias:  # aim at the central directory, where the interesting fields are
            pos = len(buf) - 1 - (pos % 400)
        buf[pos] = value
    if cut is not None:
        buf = buf[:cut]
    path = tmp_path_factory.mktemp("fuzz") / "mutated.zip"
    path.write_bytes(buf)
    _fuzz_check(path)
