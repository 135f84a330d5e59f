"""`parsing_pymupdf`: PDF, e-book and some office formats to Markdown with pymupdf4llm.

Runs inside a parser process (see parse_pool.py); pymupdf is imported on first use so the
worker itself never loads it.
"""

from __future__ import annotations

# What pymupdf opens from a stream, keyed by our file type (pymupdf's `filetype` names).
PYMUPDF_TYPES: dict[str, str] = {
    "pdf": "pdf",
    "epub": "epub",
    "xps": "xps",
    "mobi": "mobi",
    "fb2": "fb2",
    "cbz": "cbz",
    "svg": "svg",
    # pymupdf also reads these; parsing_auto prefers docling for them while docling can.
    "docx": "docx",
    "pptx": "pptx",
    "html": "html",
}


def to_markdown(content: bytes, file_type: str) -> str:
    """Markdown of `content`, knowing where each page starts (a PagedText).

    Raises ValueError for a type pymupdf does not read.
    """
    filetype = PYMUPDF_TYPES.get(file_type)
    if filetype is None:
        raise ValueError(
            f"parsing_pymupdf reads {', '.join(sorted(PYMUPDF_TYPES))} documents, "
            f"not {file_type}; use parsing_auto or parsing_docling for it"
        )
    import pymupdf
    import pymupdf4llm

    from vectorizer.stages.chunks import PagedText

    with pymupdf.open(stream=content, filetype=filetype) as document:
        pages = pymupdf4llm.to_markdown(document, show_progress=False, page_chunks=True)
    # The pages joined are exactly the single-string Markdown: chunks do not change.
    texts = [str(page.get("text") or "") for page in pages]
    starts: list[int] = []
    offset = 0
    for text in texts:
        starts.append(offset)
        offset += len(text)
    return PagedText("".join(texts), tuple(starts))
