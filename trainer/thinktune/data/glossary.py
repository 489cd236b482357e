"""The cryptography glossary: shipped ``resources/crypto_glossary.tsv`` plus an optional user file.

File format (both files): one term per line, ``term<TAB>category<TAB>alias1,alias2`` (category and aliases
optional; ``#`` starts a comment). Aliases map to their canonical term, so ``SMS4`` is recognised as ``SM4``
and the Traditional ``橢圓曲線`` as ``椭圆曲线``. Lookups are case-insensitive for Latin letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

GLOSSARY_FILE = Path(__file__).parent / "resources" / "crypto_glossary.tsv"

# Characters jieba keeps inside one token (jieba.re_han_default); terms with anything else (space, '/', '(')
# cannot be a single jieba token and are found by substring search instead.
_JIEBA_TOKEN = re.compile(r"^[\u4E00-\u9FD5a-zA-Z0-9+#&._%\-]+$")


@dataclass
class Glossary:
    terms: dict[str, str] = field(default_factory=dict)  # canonical term -> category
    lookup: dict[str, str] = field(default_factory=dict)  # lower-cased form (term or alias) -> canonical
    substring_forms: list[tuple[str, str]] = field(default_factory=list)  # (lower form, canonical)
    surface_forms: set[str] = field(default_factory=set)  # original-case terms and aliases

    def add(self, term: str, category: str = "general", aliases: list[str] | tuple[str, ...] = ()) -> None:
        term = term.strip()
        if not term:
            return
        self.terms.setdefault(term, category or "general")
        for form in (term, *aliases):
            form = form.strip()
            if not form:
                continue
            low = form.lower()
            self.lookup.setdefault(low, term)
            self.surface_forms.add(form)
            if not _JIEBA_TOKEN.match(form):
                self.substring_forms.append((low, term))

    def load(self, path: str | Path) -> Glossary:
        path = Path(path)
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip("\ufeff").rstrip()
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t")
            term = parts[0].strip()
            category = parts[1].strip() if len(parts) > 1 and parts[1].strip() else "general"
            aliases = [a for a in parts[2].split(",")] if len(parts) > 2 else []
            if not term:
                raise ValueError(f"{path}:{lineno}: empty term")
            self.add(term, category, aliases)
        return self

    def dictionary_words(self) -> list[str]:
        """Surface forms to register in jieba's user dictionary (those that can be a single jieba token)."""
        forms = {f for f in self.surface_forms if _JIEBA_TOKEN.match(f)}
        # jieba's dictionary is case-sensitive: also register lower/upper-case spellings of Latin terms
        forms |= {v for f in list(forms) if f.isascii() for v in (f.lower(), f.upper())}
        return sorted(forms)

    def canonical(self, token: str) -> str | None:
        return self.lookup.get(token.lower())

    def category(self, term: str) -> str:
        return self.terms.get(term, "general")

    def __len__(self) -> int:
        return len(self.terms)


@cache
def _load(extra: str | None) -> Glossary:
    g = Glossary().load(GLOSSARY_FILE)
    if extra:
        g.load(extra)
    return g


def load_glossary(extra: str | Path | None = None) -> Glossary:
    """The shipped glossary, merged with ``extra`` (spec.chinese.glossary) when given. Cached per path."""
    return _load(str(extra) if extra else None)


def term_aliases(extra: str | Path | None = None) -> dict[str, list[str]]:
    """Canonical term -> its other spellings (lower-cased): what evaluation's ``TermMatcher`` matches, so a
    reference saying ``SMS4`` and a prediction saying ``SM4`` count as the same term."""
    g = load_glossary(extra)
    out: dict[str, list[str]] = {t: [] for t in g.terms}
    for form, canonical in g.lookup.items():
        if form != canonical.lower():
            out[canonical].append(form)
    return out


def surface_forms_longest_first(extra: str | Path | None = None) -> list[str]:
    """Every spelling (terms and aliases), longest first: the teacher-forced term accuracy of training matches
    them in this order so a term inside a longer one (``加密`` in ``对称加密``) is not counted twice."""
    return sorted(load_glossary(extra).surface_forms, key=lambda s: (-len(s), s))
