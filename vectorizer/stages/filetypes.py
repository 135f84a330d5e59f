"""Guess a loaded document's file type from its bytes, so parsing can pick a parser.

The names are the extensions pgai's guesser yields (`pdf`, `docx`, `epub`, `png`, `txt`, ...):
parsers key on them. Magic bytes win; then the name's extension (for formats that carry no
signature: markdown, csv); then an HTTP content type; then HTML and plain UTF-8 are sniffed.
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

# XPS packages hold a fixed-document sequence; comic-book archives hold only images.
_XPS_SEQUENCE = ".fdseq"
_XPS_FOLDER = "documents/"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")

# MOBI (and AZW) files are Palm databases whose type/creator field sits at offset 60.
_MOBI_OFFSET = 60
_MOBI_MARKER = b"BOOKMOBI"

# Markup has no signature; a root tag at the start of the (BOM- and blank-stripped) head is
# enough. Comments, a doctype or an XML declaration may precede it.
_MARKUP_HEAD_BYTES = 1024
_HTML_OPENERS = (b"<!doctype html", b"<html", b"<head", b"<body")
_PROLOGUE_OPENERS = (b"<!--", b"<?xml", b"<!doctype")
_XML_ROOTS: tuple[tuple[bytes, str], ...] = (
    (b"<html", "html"),
    (b"<svg", "svg"),
    (b"<fictionbook", "fb2"),
)

_UTF8_BOM = b"\xef\xbb\xbf"


# Spellings of one format that parsers should not have to know about.
_ALIASES: dict[str, str] = {
    "htm": "html",
    "xhtml": "html",
    "jpeg": "jpg",
    "tiff": "tif",
    "markdown": "md",
    "text": "txt",
    "oxps": "xps",
}

# Compression suffixes smart_open undoes while reading: the type is the extension before them.
_COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst"})

# Content types that name a format (parameters such as `; charset=` are dropped first).
_CONTENT_TYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "application/epub+zip": "epub",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-xpsdocument": "xps",
    "application/oxps": "xps",
    "application/x-mobipocket-ebook": "mobi",
    "application/x-fictionbook+xml": "fb2",
    "application/vnd.comicbook+zip": "cbz",
    "application/xhtml+xml": "html",
    "text/html": "html",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/plain": "txt",
    "text/csv": "csv",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/tiff": "tif",
    "image/bmp": "bmp",
    "image/webp": "webp",
    "image/gif": "gif",
}


# Every type this module can name; an extension outside it is not trusted (see `_by_name`).
KNOWN_TYPES = frozenset(
    {file_type for _, file_type in _SIGNATURES}
    | set(_ZIP_MIMETYPES.values())
    | {file_type for _, file_type in _OOXML_FOLDERS}
    | {file_type for _, file_type in _XML_ROOTS}
    | set(_CONTENT_TYPES.values())
    | {"zip", "xps", "cbz", "mobi", "webp", "csv", "md", "txt", "adoc", "asciidoc"}
)


def guess_file_type(
    content: bytes, name: str | None = None, content_type: str | None = None
) -> str | None:
    """Return a lower-case extension-like type for `content`, or None when unrecognised.

    `name` (a file name, path or URI) is consulted only when the bytes have no signature, and
    `content_type` (an HTTP Content-Type) only when the name has no extension either.
    """
    return (
        _by_signature(content)
        or _by_name(name)
        or _by_content_type(content_type)
        or _markup_or_none(content)
        or _text_or_none(content)
    )


def describe_guess(name: str | None, content_type: str | None) -> str:
    """What `guess_file_type` looked at, for an error saying the type could not be told."""
    tried = ["the content's leading bytes"]
    if name:
        tried.append(f"the extension of {name!r}")
    if content_type:
        tried.append(f"the content type {content_type!r}")
    return ", ".join(tried)


def _normalised(file_type: str) -> str:
    return _ALIASES.get(file_type, file_type)


def _by_signature(content: bytes) -> str | None:
    for signature, file_type in _SIGNATURES:
        if content.startswith(signature):
            return file_type
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "webp"
    if content[_MOBI_OFFSET : _MOBI_OFFSET + len(_MOBI_MARKER)] == _MOBI_MARKER:
        return "mobi"
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
    lowered = [member.lower() for member in names]
    if any(member.endswith(_XPS_SEQUENCE) or member.startswith(_XPS_FOLDER) for member in lowered):
        return "xps"
    files = [member for member in lowered if not member.endswith("/")]
    if files and all(member.endswith(_IMAGE_SUFFIXES) for member in files):
        return "cbz"
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
    path = PurePosixPath(urlsplit(name).path if "://" in name else name)
    if path.suffix.lower() in _COMPRESSION_SUFFIXES:
        path = path.with_suffix("")
    suffix = path.suffix.lower()[1:]
    file_type = _normalised(suffix)
    # Only a format we know decides: `page.php` serving HTML is better judged by its content.
    return file_type if file_type in KNOWN_TYPES else None


def _by_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    return _CONTENT_TYPES.get(media_type)


def _markup_or_none(content: bytes) -> str | None:
    head = content[:_MARKUP_HEAD_BYTES].removeprefix(_UTF8_BOM).lstrip().lower()
    if head.startswith(_HTML_OPENERS):
        return "html"
    for root, file_type in _XML_ROOTS:
        if head.startswith(root):
            return file_type
    if head.startswith(_PROLOGUE_OPENERS):
        # The root comes after the prologue: take the first known one that appears.
        found = [(head.find(root), file_type) for root, file_type in _XML_ROOTS if root in head]
        if found:
            return min(found)[1]
    return None


def _text_or_none(content: bytes) -> str | None:
    if not content or b"\x00" in content:
        return None
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "txt"
