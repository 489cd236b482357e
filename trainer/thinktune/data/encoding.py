"""Markdown bytes → text: UTF-8, or GBK/GB18030 (what Chinese Windows editors save), line by line.

Line by line because real files mix them: a UTF-8 file appended to in a GBK editor is valid in neither
encoding as a whole, and decoding it whole as GB18030 turns its UTF-8 lines into plausible-looking mojibake
("编码" → "缂栫爜") that would go into training unnoticed. A line is GB18030 only when it is not UTF-8 and
its decoding is mostly Chinese text; anything else is an error with the line number.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

GB = "gb18030"  # superset of GBK and GB2312: one codec covers all three
MIN_CHINESE_SHARE = 0.8  # of a GB18030-decoded line's non-ASCII characters; below: not really GBK text
_CHINESE = ((0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xFF00, 0xFFEF), (0x2000, 0x206F))


class EncodingProblem(ValueError):
    """The bytes are neither UTF-8 nor GBK/GB18030 text. ``line`` is 1-based; ``reason`` is one line."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


@dataclass
class Decoded:
    text: str
    gb_lines: list[int] = field(default_factory=list)  # 1-based lines decoded as GB18030

    def warning(self, rel: str) -> str | None:
        """One warning line for a file with converted lines, None for a clean UTF-8 file."""
        if not self.gb_lines:
            return None
        shown = ", ".join(map(str, self.gb_lines[:10])) + (", …" if len(self.gb_lines) > 10 else "")
        return (
            f"{rel}:{self.gb_lines[0]}: not UTF-8, decoded as GBK/GB18030 and converted "
            f"({len(self.gb_lines)} line(s): {shown}); save the file as UTF-8"
        )


def _chinese_share(text: str) -> float:
    wide = [c for c in text if ord(c) > 0x7F]
    if not wide:
        return 1.0
    ok = sum(1 for c in wide if any(lo <= ord(c) <= hi for lo, hi in _CHINESE))
    return ok / len(wide)


def decode_markdown(raw: bytes) -> Decoded:
    """Text of ``raw`` (a UTF-8 BOM is dropped); raises EncodingProblem for a line that is neither encoding."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return Decoded(raw.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    gb: list[int] = []
    for no, line in enumerate(raw.split(b"\n"), start=1):
        try:
            out.append(line.decode("utf-8"))
            continue
        except UnicodeDecodeError as exc:
            utf8_reason = exc.reason
        try:
            text = line.decode(GB)
        except UnicodeDecodeError:
            raise EncodingProblem(no, f"neither UTF-8 ({utf8_reason}) nor GBK/GB18030") from None
        if _chinese_share(text) < MIN_CHINESE_SHARE:
            raise EncodingProblem(no, f"not UTF-8 ({utf8_reason}) and not Chinese GBK/GB18030 text") from None
        out.append(text)
        gb.append(no)
    return Decoded("\n".join(out), gb)
