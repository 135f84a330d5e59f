"""Small documents built on the fly for the parsing and loading tests.

Each builder puts a few distinctive words in its document (`WORDS[format]`), so a test can
check that they survive parsing, chunking and storage. PDF and PNG come from pymupdf, the
office formats from python-docx / python-pptx / openpyxl (docling's format extras bring them),
EPUB and the others are written by hand.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

WORDS: dict[str, tuple[str, ...]] = {
    "pdf": ("Aardvark", "quarterly", "harvest"),
    "docx": ("Platypus", "migration", "ledger"),
    "pptx": ("Okapi", "narwhal", "roadmap"),
    "xlsx": ("Wombat", "inventory"),
    "html": ("Quokka", "axolotl", "lantern"),
    "md": ("Pangolin", "meadow"),
    "txt": ("Capybara", "riverbank"),
    "epub": ("Tardigrade", "chapter", "voyage"),
    "png": ("HELLO", "IMAGE"),
    "fb2": ("Lemur", "gecko", "dusk"),
    "svg": ("Ibis", "heron"),
}


def pdf(words: tuple[str, ...] = WORDS["pdf"]) -> bytes:
    import pymupdf

    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), f"{words[0]} report", fontsize=18)
    page.insert_text((72, 110), " ".join(("The", *words[1:], "figures are final.")), fontsize=11)
    data = document.tobytes()
    document.close()
    return bytes(data)


def png(words: tuple[str, ...] = WORDS["png"]) -> bytes:
    import pymupdf

    document = pymupdf.open()
    page = document.new_page(width=300, height=80)
    page.insert_text((10, 50), " ".join(words), fontsize=28)
    data = page.get_pixmap(dpi=96).tobytes("png")
    document.close()
    return bytes(data)


def docx(words: tuple[str, ...] = WORDS["docx"]) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading(f"{words[0]} notes", level=1)
    document.add_paragraph(" ".join(("The", *words[1:], "is reconciled.")))
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pptx(words: tuple[str, ...] = WORDS["pptx"]) -> bytes:
    import pptx as python_pptx

    presentation = python_pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = f"{words[0]} overview"
    slide.placeholders[1].text = " ".join(words[1:])
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def xlsx(words: tuple[str, ...] = WORDS["xlsx"]) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["animal", "topic"])
    sheet.append([words[0], words[1]])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def html(words: tuple[str, ...] = WORDS["html"]) -> bytes:
    body = " ".join(words[1:])
    return (
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        f"<h1>{words[0]} page</h1><p>Paragraph about {body}.</p></body></html>"
    ).encode()


def markdown(words: tuple[str, ...] = WORDS["md"]) -> bytes:
    return f"# {words[0]} guide\n\nA walk across the {' '.join(words[1:])}.\n".encode()


def text(words: tuple[str, ...] = WORDS["txt"]) -> bytes:
    return f"{words[0]} by the {' '.join(words[1:])}.\n".encode()


def epub(words: tuple[str, ...] = WORDS["epub"]) -> bytes:
    """A minimal EPUB 3: mimetype first and stored, a container, an OPF and one chapter."""
    container = (
        '<?xml version="1.0"?>'
        '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" '
        'media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    opf = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">urn:uuid:0f3e7c1a-1111-4222-8333-944455556666</dc:identifier>'
        f"<dc:title>{words[0]} book</dc:title><dc:language>en</dc:language>"
        '<meta property="dcterms:modified">2024-01-01T00:00:00Z</meta></metadata>'
        '<manifest><item id="c1" href="chapter1.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        '</manifest><spine><itemref idref="c1"/></spine></package>'
    )
    nav = (
        '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
        'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>nav</title></head><body>'
        '<nav epub:type="toc"><ol><li><a href="chapter1.xhtml">One</a></li></ol></nav>'
        "</body></html>"
    )
    chapter = (
        '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>One</title></head><body><h1>{words[0]} {words[1]}</h1>"
        f"<p>The {' '.join(words[2:])} begins at dawn.</p></body></html>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # The spec wants `mimetype` first and uncompressed, so readers can sniff it.
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        members = {
            "META-INF/container.xml": container,
            "OEBPS/content.opf": opf,
            "OEBPS/nav.xhtml": nav,
            "OEBPS/chapter1.xhtml": chapter,
        }
        for name, body in members.items():
            archive.writestr(name, body, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def fb2(words: tuple[str, ...] = WORDS["fb2"]) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0"><description>'
        f"<title-info><book-title>{words[0]} tale</book-title></title-info></description>"
        f"<body><section><title><p>{words[0]} saga</p></title>"
        f"<p>The {' '.join(words[1:])} sings.</p></section></body></FictionBook>"
    ).encode()


def svg(words: tuple[str, ...] = WORDS["svg"]) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="100">'
        f'<text x="10" y="40" font-size="20">{" ".join(words)}</text></svg>'
    ).encode()


BUILDERS: dict[str, Callable[[], bytes]] = {
    "pdf": pdf,
    "png": png,
    "docx": docx,
    "pptx": pptx,
    "xlsx": xlsx,
    "html": html,
    "md": markdown,
    "txt": text,
    "epub": epub,
    "fb2": fb2,
    "svg": svg,
}


def build(file_type: str) -> bytes:
    return BUILDERS[file_type]()


def words(file_type: str) -> tuple[str, ...]:
    return WORDS[file_type]
