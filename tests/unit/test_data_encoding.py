"""Markdown decoding: UTF-8, GBK/GB18030 (whole file or single lines) converted with a warning, else an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from thinktune.data.document import DocOptions, process_file
from thinktune.data.encoding import EncodingProblem, decode_markdown

BAD = Path(__file__).resolve().parents[2] / "examples" / "crypto" / "corpus-bad"
DOC = (
    "# 盐\n\n问：为什么口令要加盐？\n答：盐让相同口令得到不同的杂凑值，彩虹表因此失效，攻击者只能逐个破解。\n"
)


def test_utf8_and_bom_are_clean():
    assert decode_markdown(DOC.encode()).text == DOC and decode_markdown(DOC.encode()).warning("x.md") is None
    assert decode_markdown(b"\xef\xbb\xbf" + DOC.encode()).text == DOC


def test_whole_gbk_file_is_converted_with_a_warning_naming_its_lines():
    d = decode_markdown(DOC.encode("gbk"))
    assert d.text == DOC and d.gb_lines == [1, 3, 4]
    assert d.warning("salt.md") == (
        "salt.md:1: not UTF-8, decoded as GBK/GB18030 and converted (3 line(s): 1, 3, 4); save the file as UTF-8"
    )


def test_mixed_file_keeps_its_utf8_lines_intact():
    # decoded whole as GB18030 the UTF-8 heading would become mojibake ("缂栫爜閿欒")
    d = decode_markdown((BAD / "bad-encoding.md").read_bytes())
    assert d.text == "# 编码错误\n\n中文的 GBK 文本\n" and d.gb_lines == [3]


def test_neither_encoding_is_an_error_with_the_line():
    with pytest.raises(EncodingProblem) as e:
        decode_markdown("# title\n\ncafé crème brûlée\n".encode("latin-1"))
    assert e.value.line == 3 and e.value.reason.startswith("neither UTF-8")
    with pytest.raises(EncodingProblem) as e:  # valid GB18030 bytes, but Greek and Cyrillic: not GBK text
        decode_markdown(b"# t\n\xa6\xa1\xa6\xa2\xa6\xa3\xa7\xa1\n")
    assert e.value.line == 2 and "not Chinese GBK/GB18030 text" in e.value.reason
    with pytest.raises(EncodingProblem) as e:
        decode_markdown(b"ok\n\xff\xfe\x00binary")
    assert e.value.line == 2 and "neither UTF-8" in e.value.reason


def test_process_file_converts_gbk_and_rejects_undecodable(tmp_path):
    (tmp_path / "gbk.md").write_bytes(DOC.encode("gbk"))
    r = process_file(str(tmp_path / "gbk.md"), "gbk.md", DocOptions())
    assert r.warnings[0].startswith("gbk.md:1: not UTF-8, decoded as GBK/GB18030") and not r.rejects
    assert any("彩虹表" in s.answer for s in r.samples)
    (tmp_path / "latin.md").write_bytes("# t\n\ncafé\n".encode("latin-1"))
    r = process_file(str(tmp_path / "latin.md"), "latin.md", DocOptions())
    assert not r.samples and r.rejects[0].line == 3 and r.rejects[0].fix == "save the file as UTF-8"
    assert r.errors[0].startswith("latin.md:3: neither UTF-8") and "save the file as UTF-8" in r.errors[0]
