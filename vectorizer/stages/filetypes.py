"""Guess a loaded document's file type from its bytes, so parsing can pick a parser.

The names are the extensions pgai's guesser yields (`pdf`, `docx`, `epub`, `png`, `txt`, ...):
parsers key on them. Magic bytes win over the name; the name's extension is the fallback for
formats that carry no signature (markdown, csv); plain UTF-8 is `txt`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath
from urllib.parse import urlsplit

# Leading signatures of formats that can be told apart from their first bytes alone.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "doc"),
)

_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

# Office Open XML packages are zips whose parts live under one well-known folder.
_OOXML_FOLDERS: tuple[tuple[str, str], ...] = (
    ("word/", "docx"),
    ("xl/", "xlsx"),
    ("ppt/", "pptx"),
)

# OpenDocument and EPUB packages declare themselves in a `mimetype` member.
_ZIP_MIMETYPES: dict[str, str] = {
    "application/epub+zip": "epub",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
}

# HTML has no signature; a tag at the start of the (BOM- and blank-stripped) head is enough.
_HTML_HEAD_BYTES = 1024
_HTML_OPENERS = (b"<!doctype html", b"<html", b"<head", b"<body")

_UTF8_BOM = b"\xef\xbb\xbf"


def guess_file_type(content: bytes, name: str | None = None) -> str | None:
    """Return a lower-case extension-like type for `content`, or None when unrecognised.

    `name` (a file name, path or URI) is consulted only when the bytes have no signature.
    """
    return (
        _by_signature(content) or _by_name(name) or _html_or_none(content) or _text_or_none(content)
    )


def _by_signature(content: bytes) -> str | None:
    for signature, file_type in _SIGNATURES:
        if content.startswith(signature):
            return file_type
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "webp"
    if content.startswith(_ZIP_SIGNATURES):
        return _zip_kind(content)
    return None


def _zip_kind(content: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
            mimetype = _read_mimetype(archive, names)
    except (zipfile.BadZipFile, OSError, EOFError):
        # A truncated or damaged archive is still a zip as far as the parser choice goes.
        return "zip"
    if mimetype in _ZIP_MIMETYPES:
        return _ZIP_MIMETYPES[mimetype]
    for folder, file_type in _OOXML_FOLDERS:
        if any(member.startswith(folder) for member in names):
            return file_type
    return "zip"


def _read_mimetype(archive: zipfile.ZipFile, names: list[str]) -> str | None:
    if "mimetype" not in names:
        return None
    # The member is a few dozen bytes by spec; cap the read so a hostile archive cannot inflate.
    with archive.open("mimetype") as member:
        return member.read(256).decode("ascii", errors="replace").strip()


def _by_name(name: str | None) -> str | None:
    if not name:
        return None
    # Query strings and fragments of a URI are not part of the file name.
    path = urlsplit(name).path if "://" in name else name
    suffix = PurePosixPath(path).suffix.lower()
    return suffix[1:] or None


def _html_or_none(content: bytes) -> str | None:
    head = content[:_HTML_HEAD_BYTES].removeprefix(_UTF8_BOM).lstrip().lower()
    if head.startswith(_HTML_OPENERS):
        return "html"
    # Comments or an XML declaration may precede the root element.
    if head.startswith((b"<!--", b"<?xml")) and b"<html" in head:
        return "html"
    return None


def _text_or_none(content: bytes) -> str | None:
    if not content or b"\x00" in content:
        return None
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "txt"
