"""Chinese text handling: OpenCC Traditional→Simplified, width/punctuation normalisation, jieba + glossary.

Everything here works on *markdown text* and never touches code or URLs: inline code spans, fenced/indented
code lines (given as protected line ranges by the caller, who knows them from the markdown AST), autolinks,
bare URLs and link destinations are cut out as protected segments before any conversion and put back
unchanged afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from thinktune.cjk import IDEOGRAPH_CLASS
from thinktune.data.glossary import Glossary, load_glossary

# Ideographs + CJK punctuation + full-width forms: what counts as a "CJK character" for punctuation rules.
_CJK_IDEO = IDEOGRAPH_CLASS
_CJK = _CJK_IDEO + "\u3000-\u303f\uff00-\uffef\u2018-\u201d\u2026"
_HAS_CJK = re.compile(f"[{_CJK_IDEO}]")

# Protected inline pieces (masking only; block structure comes from the markdown AST).
_PROTECT = re.compile(
    r"(?P<code>(?P<ticks>`+)(?:(?!\n[ \t]*\n)[\s\S])+?(?<!`)(?P=ticks)(?!`))"  # inline code `..` / ``..``
    r"|(?P<autolink><(?:https?|ftp|mailto):[^>\s]*>)"  # <https://...>
    r"|(?P<dest>\]\([^)\s]*(?:\s+\"[^\"]*\")?\))"  # ](destination "title") of links/images
    r"|(?P<url>(?:https?|ftp)://[^\s<>()\u3000-\u303f\uff08\uff09\uff0c\uff1b]+)"  # bare URL
    r"|(?P<html></?[A-Za-z][\w-]*(?:\s[^<>]*)?>)"  # raw html tags
)

_FULLWIDTH_ALNUM = {
    **{0xFF10 + i: 0x30 + i for i in range(10)},  # ０-９
    **{0xFF21 + i: 0x41 + i for i in range(26)},  # Ａ-Ｚ
    **{0xFF41 + i: 0x61 + i for i in range(26)},  # ａ-ｚ
}
_HALF2FULL = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
# half-width , . ? ! : ; right after a CJK char and followed by a CJK char, whitespace+CJK, or end of line
_PUNCT_RULE = re.compile(f"(?<=[{_CJK}])[ \\t]*([,.?!:;])(?:[ \\t]*(?=[{_CJK}])|[ \\t]*(?=\\n|$))")
# , ; : ! ? closing a Chinese clause before Latin text ("重复,GCM 的…"): full-width too. Not '.', which
# starts names such as '.NET' or file extensions.
_CLAUSE_RULE = re.compile(f"(?<=[{_CJK_IDEO}])([,;:!?])(?=[A-Za-z0-9`*_\\[(])")
_PAREN_RULE = re.compile(r"\(([^()\n]*)\)")

SEP = "\ue000"


def _ALNUM(ch: str) -> bool:  # noqa: N802 - reads like a character class
    return ch.isascii() and ch.isalnum()  # private-use separator: OpenCC and our regexes leave it alone


@dataclass(frozen=True)
class NormalizeOptions:
    opencc: str = "t2s"  # t2s | tw2s | tw2sp | hk2s | none
    punctuation: bool = True


_CONVERTERS: dict[str, object] = {}


def opencc_converter(profile: str):
    """A cached ``opencc.OpenCC(profile)`` (None for 'none')."""
    if profile == "none":
        return None
    conv = _CONVERTERS.get(profile)
    if conv is None:
        import opencc  # the `opencc` PyPI package (bundled configs: t2s, tw2s, tw2sp, hk2s, ...)

        conv = opencc.OpenCC(profile)
        _CONVERTERS[profile] = conv
    return conv


def _fix_parens(m: re.Match[str]) -> str:
    inner = m.group(1)
    if _HAS_CJK.search(inner):
        return f"（{inner}）"
    return m.group(0)


def normalize_punct_width(text: str) -> str:
    """Full-width ASCII letters/digits → half-width; half-width ,.?!:;() in CJK context → full-width.

    ``text`` must already be free of code/URLs (see :func:`normalize_markdown`)."""
    text = text.translate(_FULLWIDTH_ALNUM)
    if not _HAS_CJK.search(text):
        return text
    text = _PUNCT_RULE.sub(lambda m: _HALF2FULL[m.group(1)], text)
    text = _CLAUSE_RULE.sub(lambda m: _HALF2FULL[m.group(1)], text)
    return _PAREN_RULE.sub(_fix_parens, text)


def split_protected(text: str) -> list[tuple[bool, str]]:
    """Split a markdown fragment into (protected, piece) runs: inline code, URLs, link targets, html tags."""
    out: list[tuple[bool, str]] = []
    pos = 0
    for m in _PROTECT.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos : m.start()]))
        out.append((True, m.group(0)))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


_MAINLAND_FILE = Path(__file__).parent / "resources" / "mainland_terms.tsv"


@cache
def _mainland_table() -> tuple[re.Pattern[str], dict[str, str]]:
    rows = [ln.split("\t") for ln in _MAINLAND_FILE.read_text(encoding="utf-8").splitlines()]
    table = {r[0].strip(): r[1].strip() for r in rows if len(r) == 2 and not r[0].startswith("#")}
    return re.compile("|".join(sorted(map(re.escape, table), key=len, reverse=True))), table


def mainland_terms(text: str) -> str:
    """Taiwan/Hong Kong wording left after OpenCC → mainland cryptography terms (讯息认证码 → 消息认证码,
    数位签章 → 数字签名); table in resources/mainland_terms.tsv."""
    rx, table = _mainland_table()
    return rx.sub(lambda m: table[m.group(0)], text) if _HAS_CJK.search(text) else text


class Normalizer:
    """Converts the non-code, non-URL parts of markdown text. One instance per process (OpenCC is cached)."""

    def __init__(self, options: NormalizeOptions = NormalizeOptions()):
        self.options = options
        self.conv = opencc_converter(options.opencc)

    def _convert_plain(self, pieces: list[str]) -> list[str]:
        if not pieces:
            return pieces
        if self.conv is not None:
            joined = SEP.join(pieces)
            conv = self.conv.convert(joined)
            out = conv.split(SEP)
            if len(out) != len(pieces):  # never expected; fall back to piecewise conversion
                out = [self.conv.convert(p) for p in pieces]
            pieces = [mainland_terms(p) for p in out]
        if self.options.punctuation:
            pieces = [normalize_punct_width(p) for p in pieces]
        return pieces

    def inline(self, text: str) -> str:
        """Normalise a piece of markdown with no code blocks in it (inline code and URLs are kept)."""
        if not text:
            return text
        parts = split_protected(text)
        plain_idx = [i for i, (prot, _) in enumerate(parts) if not prot]
        conv = self._convert_plain([parts[i][1] for i in plain_idx])
        pieces = [p for _, p in parts]
        for i, c in zip(plain_idx, conv, strict=True):
            pieces[i] = c
        return "".join(pieces)

    def markdown(self, text: str, code_lines: Iterable[tuple[int, int]] = ()) -> str:
        """Normalise markdown whose code-block lines (0-based, end-exclusive ranges) are given; they stay."""
        ranges = sorted(code_lines)
        if not ranges:
            return self.inline(text)
        lines = text.split("\n")
        out: list[str] = []
        pos = 0
        for start, end in ranges:
            if start > pos:
                out.append(self.inline("\n".join(lines[pos:start])))
            out.append("\n".join(lines[max(start, pos) : end]))
            pos = max(pos, end)
        if pos < len(lines):
            out.append(self.inline("\n".join(lines[pos:])))
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# jieba + glossary


class TermRecognizer:
    """jieba segmentation with the glossary loaded as a user dictionary, and per-text term recognition."""

    def __init__(self, glossary: Glossary | None = None):
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        self.glossary = glossary or load_glossary()
        self.tk = jieba.Tokenizer()
        self.tk.initialize()
        for w in self.glossary.dictionary_words():
            # a high frequency makes the DAG prefer the whole term over its parts ('差分功耗分析', 'SM4')
            self.tk.add_word(w, freq=200000, tag="crypto")
        self._cache: dict[str, tuple[str, ...]] = {}

    def cut(self, text: str) -> list[str]:
        return [t for t in self.tk.cut(text, HMM=True)]

    def terms(self, text: str) -> tuple[str, ...]:
        """Canonical glossary terms in ``text``, in order of first occurrence (cached per text)."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        found: dict[str, int] = {}
        g = self.glossary
        pos = 0
        n = len(text)
        # HMM off: terms are dictionary words, so HMM's new-word discovery adds nothing here but costs ~2x
        for i, tok in enumerate(self.tk.cut(text, HMM=False)):
            start, pos = pos, pos + len(tok)
            canon = g.lookup.get(tok.lower())
            if canon is None or canon in found:
                continue
            # a Latin term must be a whole word: 'RA' is not a term inside 'params', nor 'CA' inside 'cache'
            if (_ALNUM(tok[0]) and start > 0 and _ALNUM(text[start - 1])) or (
                _ALNUM(tok[-1]) and pos < n and _ALNUM(text[pos])
            ):
                continue
            found[canon] = i
        if g.substring_forms:
            low = text.lower()
            for form, canon in g.substring_forms:
                if canon not in found and form in low:
                    found[canon] = 10**9 + low.index(form)
        res = tuple(sorted(found, key=found.__getitem__))
        if len(self._cache) < 200_000:
            self._cache[text] = res
        return res


_RECOGNIZERS: dict[str | None, TermRecognizer] = {}


def term_recognizer(extra_glossary: str | None = None) -> TermRecognizer:
    """A process-wide TermRecognizer (jieba initialisation costs ~1 s, so it is built once per process)."""
    rec = _RECOGNIZERS.get(extra_glossary)
    if rec is None:
        rec = TermRecognizer(load_glossary(extra_glossary))
        _RECOGNIZERS[extra_glossary] = rec
    return rec
