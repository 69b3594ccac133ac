"""Training zips the server already has, looked up by name inside ``TRAIN_DATA_DIR``.

Nothing here knows about HTTP: a name that cannot be used raises :class:`TrainFileError`
(or :class:`TrainFileNotFound`), and the route turns that into its answer.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from services.errors import UserFacingError


class TrainFileError(UserFacingError):
    """``file_name`` cannot be used (its form, a link, its kind, its size)."""


class TrainFileNotFound(TrainFileError):
    """There is no such file inside the folder."""


def too_large_text(limit: int) -> str:
    return f"The file is larger than the {limit // (1024 * 1024)} MB limit (MAX_TRAIN_ZIP_MB)."


def copy_train_file(base: Path, file_name: str, dest: Path, max_bytes: int) -> int:
    """Copy ``file_name`` from inside ``base`` to ``dest``; return its size. Blocking.

    Only plain relative names are accepted (no ``..``, no absolute path), and every
    component is opened without following symbolic links, relative to the folder opened
    before it: a link anywhere, or a swap of a folder for a link while this runs, is
    refused instead of being followed out of ``base``."""
    parts = _relative_parts(file_name)
    try:
        fd = _open_inside(base, parts)
    except (FileNotFoundError, NotADirectoryError):
        raise TrainFileNotFound(
            f"There is no file `{file_name[:200]}` in TRAIN_DATA_DIR."
        ) from None
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise TrainFileError("`file_name` must not be or go through a symbolic link.") from None
        raise TrainFileError(f"`file_name` cannot be read ({exc.strerror}).") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise TrainFileError("`file_name` must name a regular file.")
    with os.fdopen(fd, "rb") as source:
        if info.st_size > max_bytes:
            raise TrainFileError(too_large_text(max_bytes))
        copied = 0
        with dest.open("wb") as target:
            while chunk := source.read(1024 * 1024):
                copied += len(chunk)
                if copied > max_bytes:
                    raise TrainFileError(too_large_text(max_bytes))
                target.write(chunk)
    return copied


#: What opening a link with O_NOFOLLOW fails with (EMLINK on FreeBSD).
_LINK_ERRNOS = {errno.ELOOP, errno.EMLINK}


def _relative_parts(file_name: str) -> list[str]:
    bad = TrainFileError(
        "`file_name` must be a relative path inside TRAIN_DATA_DIR, "
        "without '..', '\\' or a leading '/'."
    )
    if not file_name or "\x00" in file_name or "\\" in file_name or file_name.startswith("/"):
        raise bad
    path = PurePosixPath(file_name)
    parts = [part for part in path.parts if part != "."]
    if path.is_absolute() or not parts or any(part == ".." for part in parts):
        raise bad
    if len(parts) > 32 or any(len(part.encode()) > 255 for part in parts):
        raise bad
    return parts


def _open_inside(base: Path, parts: list[str]) -> int:
    """Open ``base/parts...`` read-only, following no link below ``base``."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = getattr(os, "O_DIRECTORY", 0)
    if not nofollow or os.open not in os.supports_dir_fd:  # pragma: no cover - not POSIX
        return _open_inside_portable(base, parts)
    fd = os.open(base, os.O_RDONLY | directory)
    try:
        for index, part in enumerate(parts):
            # Says "link" rather than "not a directory" for a link to a folder; O_NOFOLLOW
            # below still refuses a link that appears after this look.
            if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                raise OSError(errno.ELOOP, "is a symbolic link")
            if index == len(parts) - 1:
                nonblock = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
                return os.open(part, os.O_RDONLY | nofollow | nonblock, dir_fd=fd)
            next_fd = os.open(part, os.O_RDONLY | directory | nofollow, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        raise FileNotFoundError(errno.ENOENT, "empty path")
    finally:
        os.close(fd)


def _open_inside_portable(base: Path, parts: list[str]) -> int:  # pragma: no cover
    root = base.resolve(strict=True)
    current = root
    for part in parts:
        current = current / part
        if stat.S_ISLNK(os.lstat(current).st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link")
    current.resolve(strict=True).relative_to(root)
    return os.open(current, os.O_RDONLY)
