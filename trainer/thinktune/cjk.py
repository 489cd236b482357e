"""What counts as a Chinese (CJK) character, in one place.

The data stage's punctuation rules (``thinktune.data.chinese``) and the trainer's teacher-forced character
accuracy (``thinktune.train.scoring``) both ask "is this a CJK ideograph?"; both read the answer from here. Only
the standard library is imported: the training worker imports this module.
"""

from __future__ import annotations

# Unified Ideographs, Extension A, Compatibility Ideographs, Extensions B-F (code point ranges, inclusive)
IDEOGRAPH_RANGES: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DBF),  # Extension A
    (0x4E00, 0x9FFF),  # Unified Ideographs
    (0xF900, 0xFAFF),  # Compatibility Ideographs
    (0x20000, 0x2A6DF),  # Extension B
    (0x2A700, 0x2EBEF),  # Extensions C-F
)

# The same ranges as the inside of a regex character class: f"[{IDEOGRAPH_CLASS}]"
IDEOGRAPH_CLASS = "".join(f"{chr(a)}-{chr(b)}" for a, b in IDEOGRAPH_RANGES)


def is_ideograph(ch: str) -> bool:
    """True for one CJK ideograph (the characters Chinese character accuracy counts)."""
    o = ord(ch)
    return any(a <= o <= b for a, b in IDEOGRAPH_RANGES)
