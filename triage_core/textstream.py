"""Bytes as they arrive (an HTTP body, an S3 object) -> text, whatever tool wrote them.

Standard library only: this module ships in the serving image *and* in the dispatcher Lambda's
bundle, which gets nothing but its code directory and the Powertools layer.

* **Compression.** gzip is recognised by its magic bytes (``1f 8b``), whatever the file name or
  ``Content-Encoding`` says; several members one after another (``cat a.gz b.gz``) are read in
  order. Any other declared ``Content-Encoding`` is refused.
* **Charset** (the WHATWG Encoding Standard's order: a byte-order mark wins over any label):

  1. a BOM: UTF-8, UTF-16 LE/BE, UTF-32 LE/BE (the BOM is dropped, so every format sees the same
     text);
  2. a declared charset (HTTP ``Content-Type: ...; charset=``, the S3 object's Content-Type).
     Labels map as WHATWG says: ``iso-8859-1``, ``latin1`` and ``us-ascii`` mean windows-1252;
     any other label Python knows is honoured (``koi8-r``, ``shift_jis``...);
  3. otherwise a bounded sample (what the first read brings, at most 64 KiB: an S3 body's first
     1 MiB chunk, a request's first chunk; it never waits for data that has not arrived): UTF-16
     without BOM if every other byte is NUL, UTF-8 if the sample is valid UTF-8 or holds any UTF-8
     multi-byte sequence, else windows-1252.

  Decoding never fails a ticket: in UTF-8 text, a byte sequence that is not UTF-8 (a cp1252
  line pasted into a UTF-8 file) is read as windows-1252; the five bytes windows-1252 leaves
  undefined read as ISO-8859-1; other codecs replace what they cannot decode with U+FFFD.
  Why no statistical detector (charset-normalizer): on this project's sample exports it read an
  Excel cp1252 French file as ``mac_latin2`` (``arrivée`` -> ``arrivťe``) and German and
  ISO-8859-1 files as ``cp1250`` (``crème`` -> ``crčme``); the rule above reads every
  windows-1252 and ISO-8859-1 file exactly. A file in another legacy code page (cp1250,
  cp1251...) is read correctly when its charset is declared.
* **Line endings**: LF, CRLF and CR alike (universal newlines: every line ends in ``\\n``).
* **Bounded**: :func:`iter_lines` never holds a line longer than its limit; it reports it.
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import TextIO

SAMPLE_BYTES = 64 * 1024
SMALL_BYTES = 1024 * 1024  # a body given whole and at most this big is decoded in one go
_GZIP_MAGIC = b"\x1f\x8b"
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# WHATWG Encoding Standard, "Encodings" table: labels of windows-1252 and UTF-8 (the ones in use).
_WINDOWS_1252_LABELS = frozenset(
    {
        *("ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819", "iso-8859-1"),
        *("iso-ir-100", "iso8859-1", "iso88591", "iso_8859-1", "iso_8859-1:1987", "l1", "latin1"),
        *("latin-1", "us-ascii", "windows-1252", "x-cp1252"),
    }
)
_UTF8_LABELS = frozenset(
    {"unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8"}
)
_IDENTITY_ENCODINGS = frozenset({"", "identity"})
_GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
WINDOWS_1252 = "windows-1252"
UTF_8 = "utf-8"


class TextFormatError(ValueError):
    """The bytes as a whole cannot be read as text (unknown charset, broken gzip...)."""


class UnsupportedCharset(TextFormatError):
    """A declared charset no codec knows."""


class UnsupportedEncoding(TextFormatError):
    """A declared Content-Encoding other than gzip."""


def _cp1252_or_latin1(exc: UnicodeError) -> tuple[str, int]:
    """Error handler of windows-1252: its five undefined bytes read as ISO-8859-1."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return bytes(exc.object[exc.start : exc.end]).decode("latin-1"), exc.end


def _utf8_then_cp1252(exc: UnicodeError) -> tuple[str, int]:
    """Error handler of UTF-8: a byte sequence that is not UTF-8 reads as windows-1252."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return bytes(exc.object[exc.start : exc.end]).decode("cp1252", "triage-latin1"), exc.end


codecs.register_error("triage-latin1", _cp1252_or_latin1)
codecs.register_error("triage-utf8-cp1252", _utf8_then_cp1252)


def decode_bytes(data: bytes, encoding: str = UTF_8) -> str:
    """Decode one piece of bytes with the same never-fail rules as :func:`open_text`."""
    codec, errors = _codec(encoding)
    return data.decode(codec, errors)


def _codec(encoding: str) -> tuple[str, str]:
    """(Python codec, error handler) for a canonical encoding name."""
    if encoding == UTF_8:
        return "utf-8", "triage-utf8-cp1252"
    if encoding == WINDOWS_1252:
        return "cp1252", "triage-latin1"
    return encoding, "replace"


def canonical_charset(label: str) -> str:
    """The encoding a charset label names (WHATWG mapping first, then Python's codec registry)."""
    name = label.strip().strip('"').lower()
    if name in _UTF8_LABELS:
        return UTF_8
    if name in _WINDOWS_1252_LABELS:
        return WINDOWS_1252
    if name in ("utf-16", "utf-16le"):  # WHATWG: the bare "utf-16" label is little-endian
        return "utf-16-le"
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise UnsupportedCharset(f"unsupported charset {label!r}") from None


def check_content_encoding(value: str | None) -> None:
    """Refuse a Content-Encoding this reader cannot undo (gzip and identity are fine)."""
    token = (value or "").strip().lower()
    if token not in _IDENTITY_ENCODINGS and token not in _GZIP_ENCODINGS:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {value!r}: send gzip or uncompressed data")


class _Chunks(io.RawIOBase):
    """A readable raw stream over an iterable of byte chunks (a body queue, an S3 body)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._view:
            try:
                self._view = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


ChunkStream = _Chunks  # public: the corrections function streams a model archive through tarfile


class _Prefixed(io.RawIOBase):
    """``prefix`` (bytes already read for sniffing), then the rest of ``source``."""

    def __init__(self, prefix: bytes, source: io.BufferedIOBase):
        self._prefix = memoryview(prefix)
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._source.readinto1(buffer) or 0


class _WholeUnits(_Prefixed):
    """:class:`_Prefixed` for UTF-16/32: data that ends inside a code unit was cut, and says so
    (instead of a U+FFFD that a CSV row would take for its text or its id)."""

    def __init__(self, prefix: bytes, source: io.BufferedIOBase, unit: int):
        super().__init__(prefix, source)
        self._unit = unit
        self._total = 0

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = super().readinto(buffer)
        self._total += n
        if n == 0 and self._total % self._unit:
            raise TextFormatError(_cut_unit(self._total, self._unit))
        return n


def _unit(encoding: str) -> int:
    return 4 if encoding.startswith("utf-32") else 2 if encoding.startswith("utf-16") else 0


def _cut_unit(size: int, unit: int) -> str:
    return (
        f"the UTF-{unit * 8} data ends inside a character ({size:,} bytes after its byte-order mark, "
        f"not a multiple of {unit}): the data is truncated"
    )


class _Gunzip(io.RawIOBase):
    """Decompressed bytes; gzip's errors become :class:`TextFormatError` (saying how many bytes
    were decompressed before the data stopped making sense); optional size cap."""

    def __init__(self, source: io.BufferedIOBase, max_bytes: int | None):
        self._gzip = gzip.GzipFile(fileobj=source, mode="rb")
        self._max = max_bytes
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            n = self._gzip.readinto1(buffer)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise TextFormatError(
                f"the gzip data is corrupt or truncated: {exc}; reading stopped after "
                f"{self.total:,} decompressed bytes"
            ) from None
        self.total += n
        if self._max is not None and self.total > self._max:
            raise TextFormatError(f"the data decompresses to more than {self._max} bytes")
        return n


def _read_available(stream: io.BufferedIOBase, minimum: int, maximum: int) -> bytes:
    """At least ``minimum`` bytes (fewer only at the end), then no more than one read brings:
    never waits for data that has not arrived (a request body may trickle)."""
    parts: list[bytes] = []
    have = 0
    while have < minimum:
        piece = stream.read1(maximum - have)
        if not piece:
            break
        parts.append(piece)
        have += len(piece)
    return b"".join(parts)


def sniff_encoding(sample: bytes) -> str:
    """UTF-16 without BOM, UTF-8, or windows-1252, from a sample of the data (no BOM in it)."""
    pairs = len(sample) // 2
    if pairs >= 8:
        even_nuls = sample[0::2].count(0)
        odd_nuls = sample[1::2].count(0)
        if odd_nuls > 0.9 * pairs and even_nuls < 0.1 * pairs:
            return "utf-16-le"
        if even_nuls > 0.9 * pairs and odd_nuls < 0.1 * pairs:
            return "utf-16-be"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)  # may end mid-character
    except UnicodeDecodeError:
        # Not all UTF-8. Text pieced together from UTF-8 and windows-1252 sources stays UTF-8: its
        # stray bytes still read as windows-1252 one by one, while the opposite choice would
        # garble every UTF-8 character. A windows-1252 file has no byte sequences that happen to
        # be UTF-8 (an accented capital followed by a symbol, at most: one character misread).
        return UTF_8 if _UTF8_MULTIBYTE.search(sample) else WINDOWS_1252
    return UTF_8


_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


class DecodedText:
    """The text of a byte stream. ``encoding``, ``compressed`` and ``bom`` say how it was read."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        charset: str | None = None,
        content_encoding: str | None = None,
        max_decoded_bytes: int | None = None,
    ):
        check_content_encoding(content_encoding)
        declared = canonical_charset(charset) if charset else None
        if isinstance(chunks, (tuple, list)) and sum(map(len, chunks)) <= SMALL_BYTES:
            data = b"".join(chunks)
            if data[:2] != _GZIP_MAGIC:  # a small body already in memory: decode it in one go
                self._whole(data, declared)
                return
            chunks = (data,)
        binary: io.BufferedIOBase = io.BufferedReader(_Chunks(chunks), buffer_size=1 << 20)
        magic = _read_available(binary, 2, 2)
        binary = io.BufferedReader(_Prefixed(magic, binary), buffer_size=1 << 16)
        self.compressed = magic == _GZIP_MAGIC
        if self.compressed:
            binary = io.BufferedReader(_Gunzip(binary, max_decoded_bytes), buffer_size=1 << 20)
        sample = _read_available(binary, _HEAD_BYTES, SAMPLE_BYTES)
        sample = self._choose_encoding(sample, declared)
        codec, errors = _codec(self.encoding)
        unit = _unit(self.encoding)
        prefixed = _WholeUnits(sample, binary, unit) if unit else _Prefixed(sample, binary)
        raw = io.BufferedReader(prefixed, buffer_size=1 << 16)
        self.stream: TextIO | io.StringIO = io.TextIOWrapper(raw, encoding=codec, errors=errors, newline=None)
        self.stream._CHUNK_SIZE = 1 << 18  # type: ignore[attr-defined]  # bytes decoded per refill

    def _whole(self, data: bytes, declared: str | None) -> None:
        """The same rules on bytes already in memory, without the stream layers (a request of a
        few tickets pays microseconds for its decoding, not a tenth of a millisecond)."""
        self.compressed = False
        data = self._choose_encoding(data, declared)
        unit = _unit(self.encoding)
        if unit and len(data) % unit:
            raise TextFormatError(_cut_unit(len(data), unit))
        codec, errors = _codec(self.encoding)
        self.stream = io.StringIO(data.decode(codec, errors), newline=None)

    def _choose_encoding(self, head: bytes, declared: str | None) -> bytes:
        """Set ``encoding`` (a BOM, else the declared charset when the bytes agree with it, else
        sniffed from ``head``) and return ``head`` without its BOMs; refuse bytes that are not
        text (:func:`refuse_binary`)."""
        self.empty = not head
        self.bom = False
        self.declared_mismatch: str | None = None
        for bom, name in _BOMS:
            if head.startswith(bom):
                self.encoding, self.bom = name, True
                head = _strip_boms(head, bom, name)
                wide = name != UTF_8
                refuse_binary(
                    head[:SAMPLE_BYTES], compressed=self.compressed, wide=wide, encoding=name if wide else ""
                )
                return head
        if declared is not None:
            self.encoding = declared
            actual = label_mismatch(head[:SAMPLE_BYTES], declared)
            if actual is not None:
                self.declared_mismatch = declared
                self.encoding = actual
        else:
            self.encoding = sniff_encoding(head[:SAMPLE_BYTES])
        wide = self.encoding in _WIDE
        refuse_binary(
            head[:SAMPLE_BYTES], compressed=self.compressed, wide=wide, encoding=self.encoding if wide else ""
        )
        return _strip_boms(head, codecs.BOM_UTF8, self.encoding) if self.encoding == UTF_8 else head

    def read(self, size: int) -> str:
        return self.stream.read(size)


def iter_lines(text: TextIO, max_chars: int) -> Iterator[tuple[int, str | None]]:
    """``(line number, line)`` for every physical line (1-based, ``\\n`` kept). A line longer
    than ``max_chars`` characters is skipped without being held and comes out as ``None``.
    Data that stops making sense (a truncated gzip) raises :class:`TextFormatError` naming the
    last line read whole."""
    readline = text.readline
    number = 0
    try:
        while line := readline(max_chars + 1):
            number += 1
            if len(line) > max_chars and line[-1] != "\n":
                while (rest := readline(1 << 16)) and rest[-1] != "\n":
                    pass
                yield number, None
            else:
                yield number, line
    except TextFormatError as exc:
        raise TextFormatError(f"{exc} (the last line read whole: {number:,})") from None


# --- what the bytes say about themselves -------------------------------------------------------
_HEAD_BYTES = 16  # enough for two byte-order marks (or a BOM and a mis-decoded BOM) and a magic
_WIDE = frozenset({"utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32"})
_MOJIBAKE_BOM = "\ufeff".encode().decode("cp1252").encode()  # a BOM read as cp1252, saved as UTF-8
# Signatures of files that are not text (first bytes), named in the error.
_MAGIC = (
    (b"\x1f\x8b", "gzip data inside gzip (compressed twice)"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx, .docx or .zip file)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 file (a legacy .xls or .doc)"),
    (b"%PDF-", "a PDF document"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"PAR1", "a Parquet file"),
)


class BinaryData(TextFormatError):
    """The bytes are not text in any encoding this reader takes."""


def refuse_binary(sample: bytes, *, compressed: bool = False, wide: bool = False, encoding: str = "") -> None:
    """Raise :class:`BinaryData` for a sample of data that is not text: a known file signature
    (whatever the charset label says), or a NUL: in an 8-bit encoding (not ``wide``) a NUL byte
    (no text file in one holds one; UTF-16/32 are told apart before this by their BOM or their
    NUL pattern), in UTF-16/32 (``encoding``) a NUL character."""
    for magic, what in _MAGIC:
        if sample.startswith(magic) and (magic != b"BZh" or sample[3:4].isdigit()):
            where = "the decompressed data is" if compressed else "the data is"
            raise BinaryData(f"{where} {what}, not text: send JSON Lines, CSV or JSON (optionally gzip)")
    nul = -1 if wide else sample.find(b"\x00")
    if wide and encoding:  # whole code units only: a unit cut at the end of the sample is not judged
        nul = sample[: len(sample) - len(sample) % _unit(encoding)].decode(encoding, "replace").find("\x00")
    if nul >= 0:
        unit = "character" if wide and encoding else "byte"  # wide text is searched decoded
        where = f"decompressed {unit}" if compressed else unit
        raise BinaryData(
            f"the data is not text: a NUL at {where} {nul} (a binary file, or UTF-16/32 without its "
            "byte-order mark and mislabelled): send JSON Lines, CSV or JSON as text"
        )


def _wide_order(sample: bytes) -> str | None:
    """UTF-16/32 LE/BE as the NUL pattern of ``sample`` says, or None (not wide text)."""
    nuls = sample.count(0)
    if len(sample) < 16 or nuls < len(sample) // 4:  # wide text of ASCII structure is half NULs
        return None
    quads = len(sample) // 4
    by_slot = [sample[i::4][:quads].count(0) for i in range(4)]
    if min(by_slot[1:]) > 0.9 * quads and by_slot[0] < 0.1 * quads:
        return "utf-32-le"
    if min(by_slot[:3]) > 0.9 * quads and by_slot[3] < 0.1 * quads:
        return "utf-32-be"
    sniffed = sniff_encoding(sample)
    return sniffed if sniffed in _WIDE else None


def label_mismatch(sample: bytes, declared: str) -> str | None:
    """The encoding the bytes are in when a declared charset cannot be right, else None.

    Only what the bytes prove is used: ticket files always hold ASCII structure (braces, quotes,
    delimiters, line breaks), which UTF-16/32 write with NUL bytes and 8-bit encodings never do.
    A UTF-16/32 label on bytes without that NUL pattern is wrong (they are read as if
    undeclared); an 8-bit label on bytes with a UTF-16/32 NUL pattern is wrong too (read as the
    pattern says). Byte order: a bare ``utf-16`` label's order comes from the bytes as well."""
    if not sample:
        return None
    wide = _wide_order(sample)
    if declared in _WIDE:
        if wide is not None:
            return None if wide == declared else wide
        if b"\x00" in sample:
            return None  # wide text with little ASCII in the sample: trust the label
        return sniff_encoding(sample)
    return wide


def _strip_boms(head: bytes, bom: bytes, encoding: str) -> bytes:
    """``head`` without its byte-order mark and any further ones (a file re-saved by a tool that
    adds a BOM to text that already began with one), or a UTF-8 BOM that was read as
    windows-1252 and saved again as UTF-8 (``ï»¿``)."""
    while head.startswith(bom):
        head = head[len(bom) :]
    if encoding == UTF_8:
        while head.startswith(_MOJIBAKE_BOM) or head.startswith(codecs.BOM_UTF8):
            head = head[len(_MOJIBAKE_BOM) if head.startswith(_MOJIBAKE_BOM) else 3 :]
    return head
