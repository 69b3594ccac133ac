"""Validate a LoRA training zip before it is uploaded anywhere.

The checker never extracts anything and never writes to disk. It reads the central directory,
judges every entry by name and metadata (:mod:`.archive`), then streams the images and
captions through ``zipfile`` in bounded chunks, which also verifies each entry's CRC
(:mod:`.reader`), and inspects the image bytes with Pillow (:mod:`.entries`).

Image verification is *structural*: Pillow parses the header (format, size, mode), PNG files are
walked chunk by chunk with their CRCs checked up to ``IEND`` (``Image.verify``), JPEG files must
have a well-formed marker sequence and an end-of-image marker after the scan data (catches the
common cut-off upload), WebP files must be as long as their RIFF header says. Decoding every
pixel costs several times more than reading the zip, so it is opt-in via
``ZipLimits.decode_pixels`` (JPEG is then decoded at 1/8 scale, PNG and WebP in full).

All problems are collected into one :class:`ZipReport` (:mod:`.report`); its messages are shown
verbatim to users, so they are plain words and name the entry they are about. Only
:class:`ZipCheckError` escapes :func:`check_zip`, and only when the file itself cannot be
opened. :func:`download_to_file` (:mod:`.download`) streams an upload to disk before.
"""

from services.sniff import sniff_format
from services.zipcheck.archive import (
    ARCHIVE_EXTENSIONS,
    CAPTION_EXTENSION,
    JUNK_DIRS,
    JUNK_FILES,
    check_zip,
    check_zip_async,
)
from services.zipcheck.download import download_to_file
from services.zipcheck.entries import IMAGE_EXTENSIONS
from services.zipcheck.errors import ZipCheckError, ZipTooLarge, ZipUnreadable
from services.zipcheck.limits import MB, ZipLimits
from services.zipcheck.report import ZipReport

__all__ = [
    "ARCHIVE_EXTENSIONS",
    "CAPTION_EXTENSION",
    "IMAGE_EXTENSIONS",
    "JUNK_DIRS",
    "JUNK_FILES",
    "MB",
    "ZipCheckError",
    "ZipLimits",
    "ZipReport",
    "ZipTooLarge",
    "ZipUnreadable",
    "check_zip",
    "check_zip_async",
    "download_to_file",
    "sniff_format",
]
