"""Real-page-like markdown for the DatasetBuild throughput bench (bench/dataset_throughput.py).

Pages are shaped like the attack write-ups and notes people publish: an analysis with LaTeX math, nested
step lists, long shell transcripts (hexdumps, scanner and solver output), a code block with its lead-in, a
parameter table, a 问/答 and a bold question, and a long reference link list. All sentences and transcripts
are original text written for this bench, combined by a seeded random generator so every page differs.
"""

from __future__ import annotations

import random

# Sentences, phrases and transcripts below are written for this bench (original text), combined at random.
TOPICS = [
    "RSA 小公钥指数攻击",
    "CBC 字节翻转",
    "Padding Oracle",
    "LCG 状态恢复",
    "ECDSA 随机数重用",
    "格基规约求解 HNP",
    "Wiener 攻击",
    "哈希长度扩展",
    "AES-GCM nonce 重用",
    "SM2 签名验证",
    "Coppersmith 小根",
    "离散对数 Pohlig-Hellman",
]
SENT = [
    "题目给出了加密脚本和一组输出，先把参数读出来再判断弱点在哪里。",
    "由于模数的两个素因子过于接近，可以直接用费马分解在几秒内得到结果。",
    "注意这里的随机数生成器是可预测的，只要拿到连续几个输出就能恢复内部状态。",
    "如果签名时两次使用了同一个 k，那么两条签名方程相减就能消去私钥以外的未知量。",
    "把问题写成格上的最近向量问题之后，用 LLL 规约就能找到足够短的向量。",
    "服务器在填充错误和 MAC 错误时返回了不同的状态码，这正是填充预言的来源。",
    "攻击的复杂度大约是 $O(2^{n/2})$，在题目给的参数下完全可行。",
    "实际测试时要先在本地复现一遍，确认脚本在边界条件下也能正确处理。",
    "这一步的关键在于把已知的明文结构和密文分组对齐，否则翻转的位置会错开一个分组。",
    "根据中国剩余定理，只要收集到 $e$ 组相同明文在不同模数下的密文，就可以直接开 $e$ 次方。",
    "需要特别说明的是，题目中的哈希函数使用了 Merkle–Damgård 结构，因此存在长度扩展问题。",
    "我们可以验证 $ed \\equiv 1 \\pmod{\\varphi(n)}$ 是否成立，以确认恢复出来的私钥正确。",
]
CMDS = [
    "nmap -sV -p- 10.10.{a}.{b}",
    "python3 solve.py --host 10.10.{a}.{b}",
    "openssl rsa -pubin -in pub{a}.pem -text -noout",
    "hexdump -C cipher{a}.bin | head -n 40",
    "sage exploit{a}.sage",
    "nc 10.10.{a}.{b} {p}",
]


def hexline(r, off):
    bs = " ".join(f"{r.randrange(256):02x}" for _ in range(16))
    return f"{off:08x}  {bs[:23]}  {bs[24:]}  |{''.join(chr(r.randrange(33, 127)) for _ in range(16))}|"


def transcript(r, lines):
    out = ["```console"]
    a, b, p = r.randrange(256), r.randrange(256), r.randrange(1024, 65535)
    out.append("$ " + r.choice(CMDS).format(a=a, b=b, p=p))
    for i in range(lines):
        k = r.random()
        if k < 0.4:
            out.append(hexline(r, i * 16))
        elif k < 0.7:
            out.append(f"[*] round {i}: candidate = 0x{r.getrandbits(96):024x}, score = {r.random():.4f}")
        elif k < 0.85:
            out.append(
                f"{r.randrange(1, 65535)}/tcp open  {r.choice(['ssh', 'http', 'https', 'unknown'])}  OpenSSH {r.randrange(6, 9)}.{r.randrange(10)}"
            )
        else:
            out.append(f"[+] n = {r.getrandbits(256)}")
    out.append("```")
    return "\n".join(out)


# a lead-in with a number in front of each sentence keeps every paragraph distinct text, so no per-paragraph
# cache (the term recognizer's) can short-cut the work a real corpus costs
LEADS = [
    "在第 {k} 轮测试中，",
    "对参数 $n_{{{k}}}$ 而言，",
    "回到第 {k} 个样本，",
    "按照 {t} 的思路，",
    "实验 {k} 表明，",
    "换成 {k} 位的模数后，",
    "",
]


def paragraph(r, n=3):
    return "".join(
        r.choice(LEADS).format(k=r.randrange(1, 10**6), t=r.choice(TOPICS)) + r.choice(SENT) for _ in range(n)
    )


def link_list(r, n):
    return "\n".join(
        f"- [{r.choice(TOPICS)} 相关笔记 {i}](https://blog.example.org/{r.getrandbits(32):08x}/post-{i}.html)"
        for i in range(n)
    )


def nested_list(r):
    out = []
    for i in range(r.randrange(3, 7)):
        out.append(f"{i + 1}. {paragraph(r, 1)}")
        for _ in range(r.randrange(1, 4)):
            out.append(f"   - {paragraph(r, 1)}")
            if r.random() < 0.3:
                out.append(f"     - 参数 $k_{{{i}}} = {r.randrange(2, 2**20)}$")
    return "\n".join(out)


def table(r):
    rows = ["| 参数 | 取值 | 说明 |", "| --- | --- | --- |"]
    for _ in range(r.randrange(4, 12)):
        rows.append(f"| $p_{{{r.randrange(9)}}}$ | `0x{r.getrandbits(64):016x}` | {r.choice(SENT)[:20]} |")
    return "\n".join(rows)


def math_block(r):
    return (
        "$$\n"
        + f"c \\equiv m^{{{r.randrange(3, 65538)}}} \\pmod{{n}}, \\quad m = \\sum_{{i=0}}^{{{r.randrange(5, 64)}}} a_i 2^{{8i}}"
        + "\n$$"
    )


def code(r):
    return (
        "```python\n"
        + "\n".join(
            [
                "from Crypto.Util.number import long_to_bytes, inverse",
                f"n = {r.getrandbits(512)}",
                f"e = {r.choice([3, 17, 65537])}",
                f"c = {r.getrandbits(512)}",
                "for k in range(1, 1 << 16):",
                "    d = inverse(e, k)",
                "    m = pow(c, d, n)",
                "    if b'flag' in long_to_bytes(m):",
                "        print(long_to_bytes(m)); break",
            ]
        )
        + "\n```"
    )


def page(r: random.Random) -> str:
    title = r.choice(TOPICS)
    parts = [f"# {title} writeup", paragraph(r, 2)]
    parts += ["## 题目分析", paragraph(r, 4), math_block(r), paragraph(r, 2)]
    parts += [
        "## 解题步骤",
        nested_list(r),
        "运行脚本，输出如下：",
        transcript(r, r.randrange(40, 400)),
        paragraph(r, 2),
    ]
    parts += ["## 关键代码", "下面的代码完成了最后一步的恢复：", code(r), paragraph(r, 2)]
    if r.random() < 0.6:
        parts += ["## 参数表", table(r)]
    if r.random() < 0.7:
        parts += [
            "## 常见问题",
            f"问：{r.choice(SENT)[:18]}？",
            f"答：{paragraph(r, 2)}",
            f"**为什么{r.choice(TOPICS)}可行？**",
            paragraph(r, 2),
        ]
    parts += ["## 参考链接", link_list(r, r.randrange(20, 220))]
    return "\n\n".join(parts) + "\n"


def pages(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [page(r) for _ in range(n)]
