"""What a training zip may hold."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class ZipLimits:
    max_zip_bytes: int = 100 * MB
    min_images: int = 1
    max_images: int = 200
    max_total_uncompressed: int = 1024 * MB  # zip-bomb guard
    max_ratio: float = 100.0  # per entry and overall compression ratio
    max_entries: int = 2000
    min_side_warning: int = 512
    max_image_pixels: int = 64_000_000  # decompression-bomb guard for a single image
    # Each image is held in memory while Pillow inspects it, so this bounds peak memory.
    max_image_bytes: int = 50 * MB
    max_caption_bytes: int = 10 * 1024
    # Decode every image's pixels (JPEG at 1/8 scale). Catches corrupt compressed image data
    # that the structural checks cannot, at several times the cost; PNG/WebP need up to
    # width x height x 4 bytes of memory.
    decode_pixels: bool = False
