"""Chinese handling: OpenCC, punctuation/width normalisation (code and URLs untouched), jieba + glossary."""

from __future__ import annotations

import pytest
from thinktune.data.chinese import NormalizeOptions, Normalizer, TermRecognizer, term_recognizer
from thinktune.data.glossary import GLOSSARY_FILE, Glossary, load_glossary


@pytest.fixture(scope="module")
def norm() -> Normalizer:
    return Normalizer(NormalizeOptions("t2s", True))


def test_opencc_profiles_convert_traditional():
    assert Normalizer(NormalizeOptions("t2s")).inline("橢圓曲線密碼") == "椭圆曲线密码"
    # tw2sp also converts Taiwanese vocabulary; after any profile the mainland-terms table applies
    assert Normalizer(NormalizeOptions("tw2sp")).inline("軟體") == "软件"
    assert Normalizer(NormalizeOptions("tw2sp")).inline("滑鼠") == "鼠标"  # OpenCC's phrases, not our table
    assert Normalizer(NormalizeOptions("t2s")).inline("滑鼠") == "滑鼠"
    assert Normalizer(NormalizeOptions("hk2s")).inline("訊息認證碼") == "消息认证码"
    assert Normalizer(NormalizeOptions("none")).inline("橢圓曲線") == "橢圓曲線"


def test_halfwidth_punctuation_between_cjk_becomes_fullwidth(norm):
    assert (
        norm.inline("分组长度为128位,密钥长度也是128位.它采用Feistel结构")
        == "分组长度为128位，密钥长度也是128位。它采用Feistel结构"
    )
    assert norm.inline("问:什么是杂凑?答;这样!") == "问：什么是杂凑？答；这样！"
    assert norm.inline("SM4(国密分组算法)") == "SM4（国密分组算法）"
    # Latin-only content keeps ASCII punctuation
    assert norm.inline("use AES(key, iv). Done.") == "use AES(key, iv). Done."
    assert norm.inline("版本1.3和2.0") == "版本1.3和2.0"
    assert norm.inline("使用.NET框架") == "使用.NET框架"


def test_fullwidth_letters_digits_become_halfwidth(norm):
    assert norm.inline("ＳＭ４和ａｅｓ１２８") == "SM4和aes128"


def test_code_spans_urls_and_links_are_untouched(norm):
    src = "調用`f(a,b.c)`時,參見 https://例子.cn/a,b(c) 與[鏈接](./其他(1).md)和<https://x.cn/a,b>"
    out = norm.inline(src)
    assert "`f(a,b.c)`" in out
    assert "https://例子.cn/a,b(c)" in out
    assert "](./其他(1).md)" in out
    assert "<https://x.cn/a,b>" in out
    assert out.startswith("调用`f(a,b.c)`时，参见")


def test_several_code_spans_in_one_text(norm):
    src = "用 `a,b` 校验参数,这是错误.\n\n再用 ``x`y`` 和 `z` 比较,结果相同.\n\n未闭合的 ` 反引号,照常处理."
    out = norm.inline(src)
    assert out == (
        "用 `a,b` 校验参数，这是错误。\n\n再用 ``x`y`` 和 `z` 比较，结果相同。\n\n"
        "未闭合的 ` 反引号，照常处理。"
    )


def test_code_block_lines_untouched(norm):
    md = "說明,如下:\n```python\nx = '密碼,測試'  # 註釋\n```\n結束."
    out = norm.markdown(md, [(1, 4)])
    assert out.split("\n")[1:4] == ["```python", "x = '密碼,測試'  # 註釋", "```"]
    assert out.split("\n")[0] == "说明，如下："
    assert out.split("\n")[4] == "结束。"


def test_glossary_shipped_size_categories_and_core_terms():
    g = load_glossary()
    assert len(g) >= 300
    for t in (
        "SM2",
        "SM3",
        "SM4",
        "ZUC",
        "GCM",
        "CBC",
        "TLS 1.3",
        "TLCP",
        "差分功耗分析",
        "分组密码",
        "HKDF",
        "Padding Oracle",
        "侧信道攻击",
        "X.509",
    ):
        assert t in g.terms, t
    cats = set(g.terms.values())
    assert {
        "guomi",
        "symmetric",
        "asymmetric",
        "hash",
        "mode",
        "protocol",
        "attack",
        "side_channel",
        "pki",
    } <= cats
    assert g.category("SM4") == "guomi"
    # every line of the TSV has at most 3 columns and a non-empty term
    for line in GLOSSARY_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            assert 1 <= len(parts) <= 3 and parts[0].strip(), line


def test_extra_glossary_file_is_merged(tmp_path):
    extra = tmp_path / "g.tsv"
    extra.write_text("# mine\n量子密钥分发\tprotocol\tQKD\n格基约化\n", encoding="utf-8")
    g = Glossary().load(GLOSSARY_FILE).load(extra)
    assert g.terms["量子密钥分发"] == "protocol" and g.terms["格基约化"] == "general"
    rec = TermRecognizer(g)
    assert rec.terms("QKD 即量子密钥分发") == ("量子密钥分发",)


def test_jieba_keeps_glossary_terms_as_single_tokens():
    rec = term_recognizer()
    toks = rec.cut("使用SM4分组密码时要防范差分功耗分析和相关功耗分析")
    for t in ("SM4", "分组密码", "差分功耗分析", "相关功耗分析"):
        assert t in toks or any(t in x and x in rec.glossary.terms for x in toks), (t, toks)
    assert "差分功耗分析" in toks


def test_term_recognition_aliases_case_and_multiword():
    rec = term_recognizer()
    terms = rec.terms("SMS4 与 aes-gcm 基于TLS 1.3，另有DPA和GM/T规范")
    assert "SM4" in terms  # alias SMS4
    assert "AES-GCM" in terms  # case-insensitive
    assert "TLS 1.3" in terms  # contains a space: substring match
    assert "差分功耗分析" in terms  # alias DPA
    assert "GM/T" in terms
    assert rec.terms("今天天气很好") == ()


def test_latin_terms_only_as_whole_words():
    rec = term_recognizer()
    assert rec.terms("the params of the cache machine") == ()  # no RA, CA, MAC inside words
    assert set(rec.terms("RA 与 CA 以及 MAC")) == {"RA", "CA", "MAC"}
    assert "SM4" in rec.terms("使用SM4加密")  # CJK neighbours are boundaries


@pytest.mark.parametrize("profile", ["t2s", "tw2sp", "hk2s"])
def test_taiwan_and_hong_kong_wording_becomes_mainland_terms(profile):
    from thinktune.data.chinese import NormalizeOptions, Normalizer

    out = Normalizer(NormalizeOptions(profile)).inline(
        "訊息鑑別碼與數位簽章，金鑰由亂數產生器產生，`訊息` 不變"
    )
    assert out.startswith("消息认证码与数字签名，密钥由随机数生成器产生")
    assert "`訊息`" in out  # inline code untouched
    assert Normalizer(NormalizeOptions("none")).inline("訊息") == "訊息"
