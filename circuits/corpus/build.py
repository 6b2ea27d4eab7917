"""Build a real English-ish text corpus offline, from what every fresh machine with this project has:
the docstrings, comments and documentation files of the Python standard library and of the installed
distributions in site-packages.

Why this source: SAE experiments on a real LM need millions of tokens of natural text, the machines reach
no dataset hub, and the Python installation itself carries that much prose under known licences (the
standard library under the PSF licence; each distribution under the licence its metadata declares;
distributions that declare none are skipped and listed as skipped).

Layout of a built corpus directory:
    shard-00000.jsonl ...   one JSON object per line: {"text", "source", "path"}; one document per line
    corpus.json             the manifest (format, sources with licence / documents / characters, shards with
                            their sha256, the content hash over all shards, build parameters)

A document is one file: a Python file's docstrings and comment blocks in source order (blank-line
separated), or a whole .rst / .md documentation file, or a distribution's long description. Files are
read in sorted order, so the same installation always gives byte-identical shards. Shards are written
atomically and the manifest last: a reader that goes by the manifest never sees a half-built corpus.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import sys
import sysconfig
import tokenize
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from circuits.atomic import atomic_write, atomic_write_text
from circuits.corpus.files import CORPUS_FORMAT, CORPUS_MANIFEST, corpus_files, read_manifest
from circuits.errors import CircuitsError

SHARD_NAME = "shard-{:05d}.jsonl"
DOC_SUFFIXES = (".rst", ".md")
SKIP_DIRS = frozenset(
    {"__pycache__", "test", "tests", "testing", "site-packages", "dist-packages", "idle_test"}
)
STDLIB_LICENCE = "PSF-2.0"
_PRAGMA = re.compile(r"^\s*(noqa|type:|pragma|pylint|fmt:|isort:|mypy:|-\*-|!/|ruff:|pyright:)")
_LICENCE_FILE = re.compile(r"^(licen[cs]e|copying|notice|authors)", re.IGNORECASE)

Progress = Callable[[str, int, int], None]  # (source name, sources done, sources total)


@dataclass(frozen=True)
class CorpusSource:
    """One licensed origin of documents: the standard library or one installed distribution."""

    name: str
    version: str
    licence: str
    root: Path
    files: tuple[Path, ...] = ()  # absolute, sorted by their path relative to root
    description: str = ""  # a distribution's long description (its PyPI page), one more document


@dataclass
class SourceStats:
    documents: int = 0
    characters: int = 0
    files_skipped: int = 0


@dataclass
class _ShardWriter:
    """Streams documents into size-capped shards, each written atomically."""

    directory: Path
    shard_chars: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    _lines: list[bytes] = field(default_factory=list)
    _chars: int = 0
    _docs: int = 0

    def add(self, record: dict[str, str]) -> None:
        self._lines.append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._chars += len(record["text"])
        self._docs += 1
        if self._chars >= self.shard_chars:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        name = SHARD_NAME.format(len(self.shards))
        data = b"".join(self._lines)
        atomic_write(self.directory / name, lambda tmp: Path(tmp).write_bytes(data))
        self.shards.append({"file": name, "documents": self._docs, "characters": self._chars,
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        self._lines, self._chars, self._docs = [], 0, 0


# ---- text extraction ---------------------------------------------------------------------------------
def read_text_file(path: Path, max_bytes: int = 2_000_000) -> str | None:
    """The file as UTF-8 text, or None when it is not text (undecodable, NUL bytes, too large)."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def python_prose(source: str) -> str:
    """A Python file's docstrings and comment blocks, in source order, blank-line separated.

    Comments come from the tokenizer (so '#' inside strings is not a comment); consecutive comment lines
    form one block; pragmas (noqa, type:, coding lines, shebangs) are dropped. A file that does not parse
    still gives its comments."""
    pieces: list[tuple[int, str]] = []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if doc and node.body:
                    pieces.append((node.body[0].lineno, doc.strip()))
    block: list[str] = []
    block_start, last_line = 0, -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = tok.string.lstrip("#").strip()
            line = tok.start[0]
            if not text or _PRAGMA.match(text) or set(text) <= set("-=*#~_+/\\|"):
                continue
            if line != last_line + 1 and block:
                pieces.append((block_start, " ".join(block)))
                block = []
            if not block:
                block_start = line
            block.append(text)
            last_line = line
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    if block:
        pieces.append((block_start, " ".join(block)))
    pieces.sort(key=lambda p: p[0])
    return "\n\n".join(text for _, text in pieces)


def file_document(path: Path) -> str | None:
    """The document a file contributes (None: not text, or nothing to take)."""
    text = read_text_file(path)
    if text is None:
        return None
    if path.suffix == ".py":
        text = python_prose(text)
    return text.strip() or None


# ---- sources -------------------------------------------------------------------------------------------
def _wanted(rel: Path) -> bool:
    if any(part in SKIP_DIRS for part in rel.parts[:-1]):
        return False
    if _LICENCE_FILE.match(rel.name):
        return False
    return rel.suffix == ".py" or rel.suffix in DOC_SUFFIXES


def _walk(root: Path) -> Iterator[Path]:
    """Wanted files under root; skipped directories (site-packages, tests) are pruned, not walked."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath) / name
            if _wanted(path.relative_to(root)) and path.is_file():
                yield path


def stdlib_source(root: Path | None = None) -> CorpusSource:
    """The Python standard library's .py and documentation files (tests and site-packages left out)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise CircuitsError(f"standard library directory {root} does not exist")
    files = sorted(_walk(root), key=lambda p: p.relative_to(root).as_posix())
    version = ".".join(str(v) for v in sys.version_info[:3])
    return CorpusSource(name="python-stdlib", version=version, licence=STDLIB_LICENCE, root=root,
                        files=tuple(files))


def distribution_licence(meta: Any) -> str | None:
    """The licence a distribution's metadata declares: License-Expression, else a short License field,
    else the OSI classifiers; None when it declares none."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return expr
    lic = (meta.get("License") or "").strip()
    if lic and lic.upper() not in ("UNKNOWN", "NONE") and len(lic) <= 80 and "\n" not in lic:
        return lic
    classifiers = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or [])
                   if c.startswith("License ::") and c.split("::")[-1].strip() != "OSI Approved"]
    if classifiers:
        return " OR ".join(sorted(set(classifiers)))
    if lic and lic.upper() not in ("UNKNOWN", "NONE"):  # the whole licence text: its first line names it
        return lic.splitlines()[0].strip()[:80] or None
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_sources(site_dirs: Iterable[Path] | None = None, exclude: Iterable[str] = ()
                         ) -> tuple[list[CorpusSource], list[dict[str, str]]]:
    """Installed distributions in `site_dirs` (default: this interpreter's purelib / platlib), sorted by
    name, as sources; and the distributions skipped, with why (no licence metadata, no files)."""
    if site_dirs is None:
        paths = sysconfig.get_paths()
        site_dirs = sorted({Path(paths["purelib"]), Path(paths["platlib"])})
    excluded = {_normalise(n) for n in exclude}
    found: dict[str, tuple[metadata.Distribution, Path]] = {}
    for site in site_dirs:
        site = Path(site)
        if not site.is_dir():
            raise CircuitsError(f"site-packages directory {site} does not exist")
        for dist in metadata.distributions(path=[str(site)]):
            name = dist.metadata["Name"]
            if name and _normalise(name) not in found:
                found[_normalise(name)] = (dist, site.resolve())
    sources, skipped = [], []
    for key in sorted(found):
        dist, site = found[key]
        meta = dist.metadata
        if key in excluded:
            skipped.append({"name": meta["Name"], "reason": "excluded"})
            continue
        licence = distribution_licence(meta)
        if licence is None:
            skipped.append({"name": meta["Name"], "reason": "no licence metadata"})
            continue
        files = []
        for entry in dist.files or ():
            path = Path(str(dist.locate_file(entry))).resolve()
            if path.is_relative_to(site) and _wanted(Path(str(entry))) and path.is_file():
                files.append(path)  # editable installs point outside site-packages and are left out
        files.sort(key=lambda p: p.relative_to(site).as_posix())
        description = (meta.get_payload() or "").strip() if hasattr(meta, "get_payload") else ""
        description = description or (meta["Description"] or "").strip()
        if not files and not description:
            skipped.append({"name": meta["Name"], "reason": "no text files"})
            continue
        sources.append(CorpusSource(name=meta["Name"], version=meta["Version"] or "", licence=licence,
                                    root=site, files=tuple(files), description=description))
    return sources, skipped


# ---- the build ---------------------------------------------------------------------------------------
def _documents(source: CorpusSource, min_chars: int, stats: SourceStats) -> Iterator[dict[str, str]]:
    if len(source.description) >= min_chars:
        yield {"text": source.description, "source": source.name, "path": "METADATA:description"}
    for path in source.files:
        text = file_document(path)
        if text is None or len(text) < min_chars:
            stats.files_skipped += 1
            continue
        yield {"text": text, "source": source.name, "path": path.relative_to(source.root).as_posix()}


def build_corpus(
    out_dir: Path,
    sources: list[CorpusSource] | None = None,
    *,
    skipped: list[dict[str, str]] | None = None,
    min_doc_chars: int = 200,
    max_chars: int | None = None,
    max_chars_per_source: int | None = 4_000_000,
    shard_chars: int = 8_000_000,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the corpus of `sources` (default: the standard library, then every installed distribution
    with licence metadata) into `out_dir`; returns the manifest that is also written as corpus.json.

    min_doc_chars drops near-empty documents; max_chars_per_source keeps one huge package (torch) from
    dominating; max_chars stops the whole build once reached (at a document boundary)."""
    out_dir = Path(out_dir)
    if min_doc_chars < 1 or shard_chars < 1:
        raise CircuitsError("min_doc_chars and shard_chars must be positive")
    if (out_dir / CORPUS_MANIFEST).exists() and not overwrite:
        raise CircuitsError(f"{out_dir} already holds a corpus; pass overwrite to rebuild it")
    if out_dir.exists() and not out_dir.is_dir():
        raise CircuitsError(f"{out_dir} exists and is not a directory")
    if sources is None:
        dists, dist_skipped = distribution_sources()
        sources = [stdlib_source(), *dists]
        skipped = [*(skipped or []), *dist_skipped]
    if not sources:
        raise CircuitsError("no corpus sources")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out_dir, shard_chars)
    per_source, total = [], 0
    for done, source in enumerate(sources):
        stats = SourceStats()
        for record in _documents(source, min_doc_chars, stats):
            if max_chars_per_source is not None and stats.characters >= max_chars_per_source:
                break
            if max_chars is not None and total >= max_chars:
                break
            writer.add(record)
            stats.documents += 1
            stats.characters += len(record["text"])
            total += len(record["text"])
        per_source.append({"name": source.name, "version": source.version, "licence": source.licence,
                           "documents": stats.documents, "characters": stats.characters,
                           "files": len(source.files), "files_skipped": stats.files_skipped})
        if progress is not None:
            progress(source.name, done + 1, len(sources))
    writer.flush()
    if not writer.shards:
        raise CircuitsError("the sources gave no document (all files empty, not text or too short)")
    content = hashlib.sha256()
    for shard in writer.shards:
        content.update((out_dir / shard["file"]).read_bytes())
    manifest = {
        "format": CORPUS_FORMAT,
        "text_field": "text",
        "documents": sum(s["documents"] for s in writer.shards),
        "characters": sum(s["characters"] for s in writer.shards),
        "bytes": sum(s["bytes"] for s in writer.shards),
        "sha256": content.hexdigest(),
        "shards": writer.shards,
        "sources": per_source,
        "skipped_sources": list(skipped or []),
        "build": {"min_doc_chars": min_doc_chars, "max_chars": max_chars,
                  "max_chars_per_source": max_chars_per_source, "shard_chars": shard_chars,
                  "python": sys.version.split()[0], "platform": sys.platform,
                  "document": "one file: a .py file's docstrings and comment blocks, a .rst/.md file, "
                              "or a distribution's long description"},
        "licence_note": "each document keeps the licence of its source (see sources[].licence); the "
                        "Python standard library is under the PSF licence",
    }
    atomic_write_text(out_dir / CORPUS_MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    keep = {s["file"] for s in writer.shards}
    for stale in out_dir.glob("shard-*.jsonl"):  # from an earlier, larger build
        if stale.name not in keep:
            stale.unlink()
    return manifest


# ---- reading ---------------------------------------------------------------------------------------------
def verify_corpus(corpus_dir: Path) -> dict[str, Any]:
    """Recompute every shard's sha256 and the content hash; CircuitsError on any mismatch."""
    manifest = read_manifest(corpus_dir)
    content = hashlib.sha256()
    for shard, path in zip(manifest["shards"], corpus_files(corpus_dir), strict=True):
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CircuitsError(f"{path}: content does not match its sha256 in {CORPUS_MANIFEST}")
        content.update(data)
    if content.hexdigest() != manifest["sha256"]:
        raise CircuitsError(f"{corpus_dir}: content hash does not match {CORPUS_MANIFEST}")
    return manifest


def count_tokens(corpus_dir: Path, encode: Callable[[str], list[int]], max_documents: int | None = None
                 ) -> dict[str, int]:
    """Tokens (and documents) of a corpus under a tokenizer's `encode`, for its size in tokens."""
    from circuits.sae.sources import iter_documents

    tokens = docs = 0
    for text in iter_documents(Path(corpus_dir)):
        tokens += len(encode(text))
        docs += 1
        if max_documents is not None and docs >= max_documents:
            break
    return {"documents": docs, "tokens": tokens}
