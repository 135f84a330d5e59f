"""`vectorizer download-models`: fill docling's model cache ahead of time, or the HuggingFace
cache with the local embedding models named on the command line.

Parsing never downloads (parser processes run with the hub offline), so a worker that
should parse PDFs or images with docling needs this run once, where Hugging Face is
reachable; the cache directory can then be copied or mounted where the workers run. The same
goes for `embedding_sentence_transformers` models on workers without network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vectorizer.stages import document_settings, parse_docling


def download_models(args: argparse.Namespace) -> int:
    """Fetch the named embedding models, else docling's; exit code for the CLI."""
    if args.models:
        return download_embedding_models(args.models, args.cache_dir)
    return download_docling_models(args)


def download_embedding_models(names: list[str], cache_dir: str | None) -> int:
    """Fetch sentence-transformers models into the HuggingFace cache the worker reads."""
    from huggingface_hub import snapshot_download

    failed = 0
    for name in names:
        print(f"downloading {name} ...")
        try:
            path = snapshot_download(name, cache_dir=cache_dir)
        except Exception as exc:  # unknown name, no network, offline mode: say which
            print(f"error: {name}: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name} is in {path}")
    if cache_dir and not failed:
        print(f"workers find them with HF_HUB_CACHE={cache_dir}")
    return 1 if failed else 0


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def download_docling_models(args: argparse.Namespace) -> int:
    """Fetch the models docling's PDF and image pipelines need; exit code for the CLI."""
    chosen = Path(args.cache_dir) if args.cache_dir else document_settings.docling_cache_dir()
    cache_dir = chosen.expanduser()
    if not parse_docling.installed():
        print(f"error: docling is not installed ({parse_docling.INSTALL_HINT})", file=sys.stderr)
        return 1
    from docling.utils.model_downloader import download_models as docling_download

    print(f"downloading docling models into {cache_dir} ...")
    try:
        docling_download(
            output_dir=cache_dir,
            force=args.force,
            progress=sys.stderr.isatty(),
            with_layout=True,
            with_tableformer=True,
            with_rapidocr=True,
            # Neither runs in our pipelines (no formula enrichment, no picture classes).
            with_code_formula=False,
            with_picture_classifier=False,
        )
    except Exception as exc:  # network, disk, hub errors: say which and exit 1
        print(f"error: downloading models failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    missing = [
        file_type
        for file_type in ("pdf", "png")
        if parse_docling.unavailable_reason(file_type, cache_dir) is not None
    ]
    for file_type in missing:
        print(parse_docling.unavailable_reason(file_type, cache_dir), file=sys.stderr)
    print(f"docling models are in {cache_dir}")
    if cache_dir.resolve() != document_settings.docling_cache_dir().resolve():
        print(f"workers find them with {document_settings.DOCLING_CACHE_DIR_ENV}={cache_dir}")
    return 1 if missing else 0
