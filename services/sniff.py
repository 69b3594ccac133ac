"""What a file is, judged by its first bytes only (images we might meet, and archives).

Shared by the training-zip checker and the image code, and light on purpose: no
Pillow, no HTTP client."""

from __future__ import annotations

__all__ = ["sniff_archive", "sniff_content_type", "sniff_format"]

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def sniff_format(head: bytes | bytearray) -> str | None:
    """Identify a file by its first bytes (images we might meet, and archives)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC"
    if head[:4] == b"%PDF":
        return "PDF"
    if sniff_archive(head):
        return "archive"
    return None


def sniff_archive(head: bytes | bytearray) -> bool:
    """Whether these first bytes start an archive (zip, gzip, 7z, rar, xz, zstd, bzip2, tar)."""
    return (
        head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
        or head[:2] == b"\x1f\x8b"  # gzip
        or head[:6] == b"7z\xbc\xaf\x27\x1c"
        or head[:6] == b"Rar!\x1a\x07"
        or head[:6] == b"\xfd7zXZ\x00"
        or head[:4] == b"\x28\xb5\x2f\xfd"  # zstd
        or (head[:3] == b"BZh" and head[4:10] == b"1AY&SY")
        or head[257:262] == b"ustar"
    )


def sniff_content_type(data: bytes) -> str | None:
    """MIME type of PNG, JPEG, WebP or GIF data, judged by magic bytes only."""
    return _MIME.get(sniff_format(data[:64]) or "")
