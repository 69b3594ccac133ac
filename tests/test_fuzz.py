"""Bad input, generated: the training-zip checker and the settings parser (hypothesis).

Each property says what a user or an operator may rely on whatever they feed in: only
validation errors escape (a report, a one-line ``SettingsError``), nothing is written
anywhere while a zip is checked, and whatever is accepted is usable.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, event, example, given, reject, settings
from hypothesis import strategies as st

from services.replicate import parse_model_ref
from services.settings import Settings, SettingsError, load_settings
from services.zipcheck import (
    IMAGE_EXTENSIONS,
    JUNK_DIRS,
    JUNK_FILES,
    ZipCheckError,
    ZipLimits,
    ZipReport,
    check_zip,
)
from tests.helpers.zips import Entry, corrupt_png_pixels, image_bytes, zip_bytes
from tests.test_reliability import recorded_writes

# FUZZ_EXAMPLES=5000 for a longer hunt than CI's.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --------------------------------------------------------------------------- zips

_JPEG = image_bytes((40, 32))
_PNG = image_bytes((24, 24), "PNG")
_CONTENTS = [
    _JPEG,
    _PNG,
    image_bytes((16, 16), "WEBP"),
    image_bytes((16, 16), "GIF"),
    _JPEG[: len(_JPEG) // 2],
    corrupt_png_pixels(_PNG),
    b"",
    b"a photo of TOK",
    b"\xff\xfe\x00n\x00o\x00t",
    zip_bytes([Entry("inner.jpg", _JPEG)]),
]
_NAMES = [
    "a.jpg",
    "b.PNG",
    "c.webp",
    "a.txt",
    "photos/d.jpeg",
    "photos/",
    "__MACOSX/._a.jpg",
    ".DS_Store",
    "../up.jpg",
    "a/../../b.png",
    "/etc/abs.jpg",
    "C:\\win\\c.jpg",
    "..\\..\\w.jpg",
    "ctl\x01.jpg",
    "x.zip",
    "x.tar.gz",
    "run.exe",
    "NOEXT",
    "ü/ß.png",
    "a" * 250 + ".jpg",
    "A.JPG",
]
_MODES = [None, stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777, stat.S_IFIFO | 0o644, stat.S_IFDIR]
_METHODS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]

entries = st.builds(
    Entry,
    name=st.one_of(st.sampled_from(_NAMES), st.text(min_size=1, max_size=24)),
    data=st.one_of(st.sampled_from(_CONTENTS), st.binary(max_size=512)),
    compress_type=st.sampled_from(_METHODS),
    encrypted=st.booleans(),
    declared_size=st.one_of(st.none(), st.none(), st.integers(0, 2**32 - 1)),
    unix_mode=st.sampled_from(_MODES),
)
_GOOD = [
    ("a.jpg", _CONTENTS[0]),
    ("photos/b.jpeg", _CONTENTS[0]),
    ("c.png", _CONTENTS[1]),
    ("d.webp", _CONTENTS[2]),
    ("a.txt", b"a photo of TOK"),
    ("c.txt", b"TOK on a beach"),
]
good_entries = st.builds(
    lambda pair, method: Entry(pair[0], pair[1], compress_type=method),
    st.sampled_from(_GOOD),
    st.sampled_from(_METHODS),
)
edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6)


def _build(items: list[Entry], changes: list[tuple[int, int]]) -> bytes:
    try:
        data = bytearray(zip_bytes(items))
    except Exception:  # a combination the test helpers cannot write (not the checker's)
        reject()
    for position, value in changes:
        data[position % len(data)] = value
    return bytes(data)


def _unsafe(name: str) -> bool:
    normalized = name.replace("\\", "/")
    return (
        bool(re.search(r"[\x00-\x1f\x7f]", name))
        or normalized.startswith("/")
        or bool(re.match(r"^[A-Za-z]:", normalized))
        or ".." in normalized.split("/")
    )


def _junk(name: str) -> bool:
    parts = [p.casefold() for p in name.replace("\\", "/").split("/") if p]
    return bool(parts) and (
        any(p in JUNK_DIRS for p in parts[:-1])
        or parts[-1] in JUNK_FILES
        or parts[-1].startswith("._")
    )


@contextmanager
def thread_writes() -> Iterator[list[str]]:
    """Writes by this thread only (the checker runs in the caller's thread)."""
    me = threading.current_thread()
    with recorded_writes(thread=me) as writes:
        yield writes


@FUZZ
@given(
    items=st.one_of(
        st.lists(good_entries, min_size=1, max_size=5, unique_by=lambda e: e.name),
        st.lists(st.one_of(good_entries, entries), min_size=1, max_size=6),
    ),
    changes=st.one_of(st.just([]), edits),
)
def test_fuzz_zip_checker_only_reports_and_writes_nothing(
    tmp_path_factory: pytest.TempPathFactory, items: list[Entry], changes: list[tuple[int, int]]
) -> None:
    data = _build(items, changes)
    path = tmp_path_factory.mktemp("fuzz") / "upload.zip"
    path.write_bytes(data)
    limits = ZipLimits(min_images=1, max_images=5, max_entries=50)
    with thread_writes() as writes:
        try:
            report = check_zip(path, limits, declared_size=len(data))
        except ZipCheckError as exc:  # the only error allowed out, with a message for users
            assert exc.user_message
            return
    assert writes == [], "the checker wrote to disk"
    assert isinstance(report, ZipReport)
    assert report.ok == (not report.problems)
    message = report.message()
    assert len(message) <= 1900
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", message), "raw control characters shown"
    event(f"accepted: {report.ok}")
    if report.ok:
        _assert_really_fine(path, limits, report)


def _assert_really_fine(path: Path, limits: ZipLimits, report: ZipReport) -> None:
    """What an accepted zip must be, checked independently with zipfile."""
    assert limits.min_images <= report.image_count <= limits.max_images
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.orig_filename
            assert not _unsafe(name), f"accepted an unsafe name {name!r}"
            assert (info.external_attr >> 16) & 0o170000 != stat.S_IFLNK, "accepted a symlink"
            assert not info.flag_bits & 0x1, "accepted an encrypted entry"
            if name.endswith("/") or _junk(name):
                continue
            suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
            assert suffix in (*IMAGE_EXTENSIONS, ".txt"), f"accepted {name!r}"
            zf.read(info)  # raises on a CRC mismatch or bad data


# --------------------------------------------------------------------------- settings

TOKENS = {"DISCORD_TOKEN": "dtok-SECRET-0123456789", "REPLICATE_API_TOKEN": "r8_SECRET_9876543210"}
API_TOKEN = "api-SECRET-abcdef"
_INTERESTING = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "4",
    "1001",
    "3.5",
    "inf",
    "-inf",
    "nan",
    "1e999",
    "true",
    "yes",
    "a/b",
    "a/b:c",
    "a/b,c/d",
    ",",
    "1,2,,3",
    "x,1",
    "sqlite:///x.db",
    "postgresql://u@h/db",
    "mysql://x",
    "http://127.0.0.1:1",
    "example.com",
    "DEBUG",
    " info ",
    "LOUD",
    "\x00",
    "ü",
]
_VARIABLES = sorted(name.upper() for name in Settings.model_fields)
values = st.one_of(
    st.sampled_from(_INTERESTING),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30),
)


@FUZZ
@given(
    env=st.dictionaries(st.sampled_from(_VARIABLES), values, max_size=8),
    tokens=st.sampled_from(["both", "discord only", "replicate only", "none"]),
)
def test_fuzz_settings_parser_fails_in_one_line_without_secrets(
    env: dict[str, str], tokens: str
) -> None:
    given_tokens = {
        "both": TOKENS,
        "discord only": {"DISCORD_TOKEN": TOKENS["DISCORD_TOKEN"]},
        "replicate only": {"REPLICATE_API_TOKEN": TOKENS["REPLICATE_API_TOKEN"]},
        "none": {},
    }[tokens]
    full = {**env, **given_tokens, "API_TOKEN": env.get("API_TOKEN", API_TOKEN)}
    try:
        loaded = load_settings(full, env_file=None)
    except SettingsError as exc:
        text = str(exc)
        assert "\n" not in text and text.strip() == text and len(text) < 400, text
        assert not any(s in text for s in (*TOKENS.values(), API_TOKEN)), "a secret leaked"
        named = text.split(" ", 1)[0]
        assert named in full or named in TOKENS or text.startswith("Invalid settings"), text
        return
    assert isinstance(loaded, Settings)
    assert TOKENS["DISCORD_TOKEN"] not in repr(loaded)


def _accepted(name: str, value: str) -> Settings | None:
    try:
        return load_settings({**TOKENS, name: value}, env_file=None)
    except SettingsError:
        return None


_DURATIONS = (
    "GENERATE_COOLDOWN_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "TRAINING_STATUS_EDIT_SECONDS",
    "TRAINING_POLL_SECONDS",
)


@FUZZ
@given(name=st.sampled_from(_DURATIONS), value=values)
@example(name="TRAINING_POLL_SECONDS", value="inf")
@example(name="TRAINING_STATUS_EDIT_SECONDS", value="1e999")
@example(name="GENERATE_COOLDOWN_SECONDS", value="inf")
def test_accepted_durations_are_usable(name: str, value: str) -> None:
    """An accepted duration must work where the bot uses it: ``timedelta(seconds=...)``
    for polling and status edits, a finite wait for the cooldown."""
    loaded = _accepted(name, value)
    if loaded is None:
        return
    seconds = getattr(loaded, name.lower())
    assert seconds == seconds and seconds not in (float("inf"), float("-inf")), (name, value)
    timedelta(seconds=seconds)


@FUZZ
@given(
    name=st.sampled_from(["GENERATE_MODELS", "TRAINER_VERSION", "REPLICATE_OWNER"]),
    value=st.one_of(values, st.sampled_from(["a/b c", "foo", "bad owner", "a/b:c", "-x/y"])),
)
@example(name="GENERATE_MODELS", value="black-forest-labs/flux schnell")
@example(name="TRAINER_VERSION", value="ostris/flux-dev-lora-trainer")
@example(name="REPLICATE_OWNER", value="my team")
def test_accepted_model_settings_can_be_used(name: str, value: str) -> None:
    """An accepted model setting must be one the bot can run: otherwise every /generate
    with the default model, or every /train (after the upload), fails at run time."""
    loaded = _accepted(name, value)
    if loaded is None:
        return
    for model in loaded.generate_models:
        parse_model_ref(model)
    trainer = parse_model_ref(loaded.trainer_version)
    assert trainer.version, "the trainer needs owner/name:version"
    if loaded.replicate_owner is not None:
        parse_model_ref(f"{loaded.replicate_owner}/model")
