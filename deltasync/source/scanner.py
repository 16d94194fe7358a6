"""The byte scanner: find each ``<user>…</user>`` slice of an XML extract without parsing it.

The daily run needs the bytes of each record, not its tree: a slice whose bytes hash to what the
snapshot holds is unchanged, and most are. The scanner finds slices with ``bytes.find`` at
memchr speed and checks everything *between* them: only whitespace, comments, processing
instructions and the root's own tags may stand there. What it cannot vouch for — a DOCTYPE, a
namespaced or prefixed ``user``, text or another element at root level, an empty ``<user/>``,
a document that ends early — makes it step aside (:class:`StepAside`), and the caller reads the
file with the full parser instead. It is never wrong; at worst it is not used.

A slice is cut at the first ``</user>`` after its start. That cut is right exactly when the
slice parses on its own as one ``user`` element (a nested ``<user>``, or a ``</user>`` inside a
comment or CDATA section, leaves something unclosed), so whoever parses a slice checks that,
and a slice whose bytes equal one that was parsed before needs no check at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

WHITESPACE = b" \t\r\n"
USER_START = b"<user"
USER_END = b"</user>"
COUNT_STEP = 1 << 20
_DECLARED_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_NAME = re.compile(rb"[^\s/>]+")
_BLANKS = (b" ", b"\t", b"\r", b"\n")
_OPEN_ENDS = frozenset([b">", *_BLANKS])
"""What may follow ``<user`` in a record's start tag."""
_OPEN_END_BYTES = frozenset(ord(c) for c in _OPEN_ENDS)
"""The same, as the byte values indexing a buffer gives."""
_MISC_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)


class StepAside(Exception):
    """The scanner cannot vouch for this document: read it with the full parser."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True)
class Prolog:
    """What stands before the first record: it gives every slice its meaning."""

    text: bytes
    """Everything from the start of the document to the end of the root's start tag."""
    root: bytes
    """The root element's start tag, verbatim (its namespace declarations apply to slices)."""
    root_name: bytes
    encoding: str | None
    """The encoding the XML declaration names, or None when it names none (UTF-8)."""


Slice = tuple[int, bytes]
"""One ``<user>…</user>`` of the document: the byte offset where it starts, and its bytes. A
plain tuple: the scanner makes one per record, and a named tuple's constructor is a Python
call (of a day-1 run's 5.2 s at 100,000 patrons, 0.1 s went to making them)."""


class SliceScanner:
    """Cuts one XML document, given as a sequence of byte chunks, into record slices.

    Chunks may be anything ``bytes.find`` works on (``bytes``, ``mmap``); a whole file mapped
    into memory is one chunk and is never copied, apart from the slices themselves. Line
    numbers are counted only when asked for (:meth:`line_of`): most records never need one.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.prolog: Prolog | None = None
        self._chunks = iter(chunks)
        self._more = True
        self._buffer: bytes = b""
        self._base = 0
        """The document offset of ``_buffer[0]``."""
        self._counted = 0
        """Newlines are counted up to this buffer position; it starts ``_line``."""
        self._line = 1

    @property
    def end(self) -> int:
        """The document offset the scanner has read up to."""
        return self._base + len(self._buffer)

    def line_of(self, offset: int) -> int:
        """The line of the byte at document ``offset``; offsets must be asked in order and
        lie in the part of the document the scanner is at (the current record or later)."""
        at = offset - self._base
        if at < self._counted or at > len(self._buffer):
            raise ValueError(f"line of offset {offset} is no longer known")
        self._count_to(at)
        return self._line

    def passed(self, offset: int, end: int, newlines: int) -> None:
        """The record at document ``offset`` to ``end`` holds ``newlines`` line ends, known
        from elsewhere: the lines after it are counted without reading it. Ignored once lines
        were counted into the record (its own line was asked for)."""
        at, counted = offset - self._base, self._counted
        if at < counted or end - self._base > len(self._buffer):
            return
        if at - counted < COUNT_STEP:  # what stands since the record before: a line end or so
            self._line += self._buffer[counted:at].count(b"\n") + newlines
        else:
            self._count_to(at)
            self._line += newlines
        self._counted = end - self._base

    def _count_to(self, at: int) -> None:
        # In steps: a mapped file is sliced (copied) to count, and may be gigabytes long.
        for start in range(self._counted, at, COUNT_STEP):
            self._line += self._buffer[start : min(at, start + COUNT_STEP)].count(b"\n")
        self._counted = max(self._counted, at)

    def _refill(self, pos: int) -> int:
        """Append the next chunk, dropping what is before ``pos``; returns the new position
        of ``pos`` (-1 when there is no more data)."""
        if not self._more:
            return -1
        chunk = next(self._chunks, None)
        if chunk is None:
            self._more = False
            return -1
        assert self._counted <= pos, "lines were counted past the part kept"
        self._count_to(pos)
        self._counted = 0
        self._base += pos
        self._buffer = self._buffer[pos:] + chunk if pos < len(self._buffer) else chunk
        return 0

    def slices(self) -> Iterator[Slice]:
        """Every record slice, in document order; raises :class:`StepAside` when unsure."""
        pos = self._refill(0)
        if pos < 0:
            raise StepAside("the document is empty", 0)
        while self.prolog is None:
            end = self._prolog_end(self._buffer)
            if end is not None:
                self.prolog = self._read_prolog(bytes(self._buffer[:end]), self._base)
                pos = end
            elif self._refill(0) < 0:
                raise StepAside("the document has no root element", self._base)
        while True:
            buffer = self._buffer
            lt = buffer.find(b"<", pos)
            if lt < 0 or len(buffer) - lt < 8:
                moved = self._refill(pos)
                if moved >= 0:
                    pos = moved
                    continue
                if lt < 0:
                    what = (
                        "text at root level"
                        if bytes(buffer[pos:]).strip(WHITESPACE)
                        else ("the document ends before its root element does")
                    )
                    raise StepAside(what, self._base + pos)
            if lt > pos and buffer[pos:lt].strip(WHITESPACE):
                raise StepAside("text at root level", self._base + pos)
            head = buffer[lt : lt + 6]
            if head == b"<user>" or (head[:5] == USER_START and head[5:6] in _BLANKS):
                end = buffer.find(USER_END, lt + 5)
                if end < 0:
                    moved = self._refill(lt)
                    if moved < 0:
                        raise StepAside("a record without its end tag", self._base + lt)
                    pos = moved
                    continue
                end += len(USER_END)
                base = self._base
                yield (base + lt, buffer[lt:end])
                pos = end
                # The usual document: record after record, whitespace between them. Anything
                # else (the end of the buffer, a comment, the root's end tag) takes the way
                # above, which checks all of it. Once per record: every name a local.
                find, opens, blank, size = buffer.find, _OPEN_END_BYTES, WHITESPACE, len(buffer)
                while True:
                    lt = find(b"<user", pos)
                    if lt < 0 or lt + 5 >= size or buffer[lt + 5] not in opens:
                        break
                    if lt > pos and buffer[pos:lt].strip(blank):
                        break
                    end = find(USER_END, lt + 5)
                    if end < 0:
                        break
                    end += 7  # len(USER_END)
                    yield (base + lt, buffer[lt:end])
                    pos = end
            elif head[:4] == b"<!--" or head[:2] == b"<?":
                comment = head[:4] == b"<!--"
                close = buffer.find(b"-->" if comment else b"?>", lt + 2)
                if close < 0:
                    moved = self._refill(lt)
                    if moved < 0:
                        raise StepAside("an unterminated comment", self._base + lt)
                    pos = moved
                    continue
                close += 3 if comment else 2
                self._check_misc(bytes(buffer[lt:close]), self._base + lt)
                pos = close
            elif head[:2] == b"</":
                self._finish(lt)
                return
            else:
                raise StepAside("markup other than a <user> record at root level", self._base + lt)

    def _finish(self, pos: int) -> None:
        """Check the root's end tag at ``pos`` and everything after it."""
        assert self.prolog is not None
        rest = bytes(self._buffer[pos:])
        while self._more:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            rest += bytes(chunk)
        end = rest.find(b">")
        name = rest[2:end].rstrip(WHITESPACE) if end > 0 else b""
        if name != self.prolog.root_name:
            raise StepAside("an end tag other than the root's at root level", self._base + pos)
        tail = rest[end + 1 :]
        if tail.strip(WHITESPACE):
            try:
                etree.fromstring(b"<r/>" + tail, _MISC_PARSER)
            except etree.XMLSyntaxError:
                raise StepAside("content after the root element", self._base + pos) from None

    # -- the parts around the records ---------------------------------------------------------

    @staticmethod
    def _prolog_end(buffer: bytes) -> int | None:
        """Where the root's start tag ends, if the buffer holds it (declaration, comments and
        processing instructions may come first)."""
        pos = 0
        while True:
            lt = buffer.find(b"<", pos)
            if lt < 0:
                return None
            if buffer[lt : lt + 4] == b"<!--":
                close = buffer.find(b"-->", lt + 4)
                if close < 0:
                    return None
                pos = close + 3
            elif buffer[lt : lt + 2] == b"<?":
                close = buffer.find(b"?>", lt + 2)
                if close < 0:
                    return None
                pos = close + 2
            elif buffer[lt : lt + 2] == b"<!":
                raise StepAside("a DOCTYPE or other declaration", lt)
            else:
                close = buffer.find(b">", lt)
                return None if close < 0 else close + 1

    @staticmethod
    def _read_prolog(text: bytes, base: int) -> Prolog:
        if text.startswith(b"\xef\xbb\xbf"):
            raise StepAside("a byte-order mark", base)
        start = text.rfind(b"<")
        root = text[start:]
        name_match = _NAME.match(root, 1)
        if name_match is None:
            raise StepAside("a root element without a name", base + start)
        name = name_match.group()
        if name == b"user" or name.endswith(b":user") or root.endswith(b"/>"):
            raise StepAside("the root element is a record, or empty", base + start)
        if re.search(rb"\sxmlns\s*=", root):
            # A default namespace makes every <user> a namespaced one.
            raise StepAside("the root element declares a default namespace", base + start)
        try:
            etree.fromstring(text + b"</" + name + b">", _MISC_PARSER)
        except etree.XMLSyntaxError as exc:
            raise StepAside(f"the prolog does not parse: {exc}", base) from None
        declared = None
        if text.startswith(b"<?xml"):
            found = _DECLARED_ENCODING.search(text, 0, text.find(b"?>"))
            declared = found.group(1).decode("ascii") if found else None
        return Prolog(text, root, name, declared)

    @staticmethod
    def _check_misc(text: bytes, offset: int) -> None:
        """A comment or processing instruction between records must be well-formed, as the
        full parser would demand."""
        try:
            etree.fromstring(b"<r>" + text + b"</r>", _MISC_PARSER)
        except etree.XMLSyntaxError as exc:
            raise StepAside(f"a malformed comment or instruction: {exc}", offset) from None
