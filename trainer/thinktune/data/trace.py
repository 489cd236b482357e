"""Rule-based thinking (``thinking.generate=template``, no teacher model): a trace that reasons from the source
chunk's evidence instead of restating the answer.

What it reads from the chunk: the kind of question (definition, cause, method, judgement, comparison, code),
the terms the text defines, the conditions it states, its cause–effect links, the steps it lists, the figures
it gives (bit lengths, byte counts, rounds), a table's dimensions, and for code: the language, the functions
it defines, the calls it makes, the shell commands it runs and the author's comments. The trace plans the
answer from that evidence (analysis → steps → verification) and quotes only terms, figures and identifiers,
never the answer's sentences, so ``thinking.restatement`` stays low; every name in it comes from the chunk,
so ``thinking.grounding`` is high.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from thinktune.data.thinking import code_blocks, strip_code

_KINDS = (
    ("代码", re.compile(r"代码|命令|脚本|函数")),
    ("比较", re.compile(r"区别|不同|对比|比较|相比|差异|优劣|哪个更|还是")),
    ("原因", re.compile(r"为什么|为何|原因|怎么会|何以")),
    ("方法", re.compile(r"如何|怎样|怎么|步骤|做法|方法|流程|怎么办")),
    ("判断", re.compile(r"是否|能否|可否|能不能|可不可以|要不要|需不需要|吗[？?]?$|对吗")),
    ("定义", re.compile(r"什么是|是什么|何谓|含义|指什么|定义")),
)
_DEFINES = re.compile(
    r"([A-Za-z0-9\-]{2,}|[\u4e00-\u9fff]{2,8})(?:（[^）]{1,20}）)?\s*(?:是|指|称为|即|就是)"
)
_CONDITION = re.compile(r"(?:如果|若是|若|只要|一旦|假设|前提是)([^，。；,;：:\n]{2,24})")
_CAUSAL = re.compile(r"因为|由于|所以|因此|导致|从而|使得|于是|否则")
_ADVICE = re.compile(r"不要|不能|不应|禁止|避免|应当|应该|必须|务必|建议|推荐|优先")
_FIGURE = re.compile(r"\d+(?:\.\d+)?\s*(?:位|字节|比特|bit|bits|轮|次|个|天|秒|毫秒|MB|KB|GB|%)")
_FUNC_DEF = re.compile(r"\b(?:def|func|fn|function)\s+([A-Za-z_]\w*)")
_CALL = re.compile(r"\b([A-Za-z_][\w.]*)\s*\(")
_COMMENT = re.compile(r"(?:^|\s)(?:#|//)\s*(.{2,40}?)\s*$", re.M)
_SHELL_LANGS = {"shell", "bash", "sh", "console", "zsh", "terminal", "powershell", "cmd"}
_NOT_CALLS = {"if", "for", "while", "return", "print", "len", "range", "make", "switch", "sizeof", "int"}


@dataclass
class Evidence:
    kind: str = "讲解"
    defined: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    causal: int = 0
    advice: int = 0
    steps: int = 0
    figures: list[str] = field(default_factory=list)
    table: tuple[list[str], int] | None = None
    code_lang: str = ""
    functions: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    has_output: bool = False


def _uniq(xs, n: int) -> list[str]:
    return list(dict.fromkeys(x for x in xs if x))[:n]


def question_kind(question: str) -> str:
    q = strip_code(question)
    for name, rx in _KINDS:
        if rx.search(q):
            return name
    return "讲解"


def gather(question: str, answer: str, terms: list[str]) -> Evidence:
    ev = Evidence(kind="代码" if code_blocks(question) else question_kind(question))
    prose = strip_code(answer)
    lines = prose.split("\n")
    ev.defined = _uniq((m.group(1) for m in _DEFINES.finditer(prose) if m.group(1) in terms), 3)
    ev.conditions = _uniq((m.group(1).strip() for m in _CONDITION.finditer(prose)), 2)
    ev.causal = len(_CAUSAL.findall(prose))
    ev.advice = len(_ADVICE.findall(prose))
    ev.steps = sum(1 for ln in lines if re.match(r"^\s*\d+[.)、]\s", ln))
    ev.figures = _uniq((re.sub(r"\s+", " ", m.group(0)) for m in _FIGURE.finditer(prose)), 4)
    table = [ln for ln in lines if ln.lstrip().startswith("|")]
    if len(table) >= 2:
        head = [c.strip() for c in table[0].strip().strip("|").split("|") if c.strip()]
        rows = [ln for ln in table[1:] if not set(ln.strip()) <= set("|-: ")]
        ev.table = (head[:5], len(rows))
    for block in code_blocks(question) + code_blocks(answer):
        first, _, body = block.partition("\n")
        lang = first.strip("`~ ").split(" ")[0].lower()
        ev.code_lang = ev.code_lang or lang or "示例"
        ev.comments += [c for c in _COMMENT.findall(body) if not c.startswith("!")]
        if lang in _SHELL_LANGS or any(ln.startswith("$ ") for ln in body.split("\n")):
            cmds = [ln[2:].split() for ln in body.split("\n") if ln.startswith("$ ")]
            if not cmds and lang in _SHELL_LANGS:
                cmds = [ln.split() for ln in body.split("\n") if ln.strip() and not ln.startswith("#")]
            ev.commands += [" ".join(c[:2]) for c in cmds if c]
            ev.has_output = (
                ev.has_output
                or any(ln.strip() and not ln.startswith(("$ ", "#")) for ln in body.split("\n"))
                and any(ln.startswith("$ ") for ln in body.split("\n"))
            )
        else:
            ev.functions += _FUNC_DEF.findall(body)
            ev.calls += [c for c in _CALL.findall(body) if c.split(".")[-1] not in _NOT_CALLS]
    ev.functions = _uniq(ev.functions, 3)
    ev.calls = _uniq((c for c in ev.calls if c not in ev.functions), 4)
    ev.commands = _uniq(ev.commands, 3)
    ev.comments = _uniq(ev.comments, 2)
    return ev


_PLAN = {
    "定义": "先说明它是什么、属于哪一类机制，再说明它提供什么保证、依赖什么前提",
    "原因": "先找出前提条件，再看前提不满足时会发生什么，把因果链条一环一环接起来",
    "方法": "先明确目标和约束，再按先后顺序给出可以执行的步骤，每一步说明为什么需要",
    "判断": "先给出明确的是或否，再用条件和反例说明理由，最后给出正确的做法",
    "比较": "先确定比较的维度，再逐项对照两者，最后说明各自适用的场景",
    "代码": "先看代码的输入和输出，再逐行看关键调用做了什么，最后结合上下文说明要注意的地方",
    "讲解": "先交代背景和核心概念，再展开机制和要点，最后说明实际意义",
}
_CHECK = {
    "定义": "回答是否真正给出了定义，而不是只举例子",
    "原因": "回答是否给出了完整的因果链，没有跳过中间环节",
    "方法": "步骤是否完整、顺序是否合理，照着做能否达到目标",
    "判断": "结论是否明确，理由是否覆盖了例外情况",
    "比较": "每个维度是否两边都说到了，结论是否与对照一致",
    "代码": "对代码的解释是否与代码本身一致，没有描述代码里不存在的行为",
    "讲解": "要点是否都覆盖到了，前后说法是否一致",
}


def _subject(question: str, terms: list[str]) -> str:
    m = re.search(r"「([^」]{1,30})」", question)
    if m:
        return f"「{m.group(1)}」"
    q_terms = [t for t in terms if t.lower() in question.lower()]
    if q_terms:
        return "、".join(f"「{t}」" for t in q_terms[:3])
    q = re.sub(r"\s+", " ", strip_code(question)).strip().rstrip("？?。")
    return f"「{q[:30]}」" if q else "这个问题"


def evidence_reasoning(question: str, answer: str, terms: list[str] | tuple[str, ...] = ()) -> str:
    """The trace for one sample (deterministic): analysis of the question, the evidence the chunk offers,
    the plan that uses it, and what to verify."""
    terms = list(terms)
    ev = gather(question, answer, terms)
    subject = _subject(question, terms)
    related = [t for t in terms if f"「{t}」" not in subject][:4]
    lines = [f"分析：这是一个{ev.kind}类的问题，对象是{subject}。"]
    if related:
        lines[0] += f"回答会涉及{'、'.join(related)}，需要先理清它们之间的关系。"
    known: list[str] = []
    if ev.defined:
        known.append(f"原文给出了{'、'.join(ev.defined)}的定义，可以从定义出发推理。")
    if ev.conditions:
        known.append(
            "原文设定的条件：" + "；".join(f"“{c}”" for c in ev.conditions) + "，结论要在这些条件下成立。"
        )
    if ev.causal:
        known.append(f"原文有 {ev.causal} 处因果连接，说明结论是推出来的，要把推导顺序理清。")
    if ev.steps:
        known.append(f"原文列出了 {ev.steps} 个有先后顺序的步骤，顺序本身就是答案的一部分。")
    if ev.figures:
        known.append(f"需要核对的数值：{'、'.join(ev.figures)}。")
    if ev.table:
        head, rows = ev.table
        known.append(f"有一张按{'、'.join(head)}对照的表，共 {rows} 行，应按列逐项比较。")
    if ev.advice:
        known.append(f"原文有 {ev.advice} 处建议或禁止，回答里要说明理由，而不只是给出规定。")
    if ev.code_lang:
        code = f"{ev.code_lang} 代码"
        if ev.functions:
            code += f"定义了 {'、'.join(f'`{f}`' for f in ev.functions)}"
        if ev.calls:
            code += f"{'，' if ev.functions else ''}调用了 {'、'.join(f'`{c}`' for c in ev.calls)}"
        if ev.commands:
            code += f"运行了 {'、'.join(f'`{c}`' for c in ev.commands)}"
            if ev.has_output:
                code += "，并给出了输出，输出要和命令对应起来解读"
        known.append(code + "。")
        if ev.comments:
            known.append("作者在代码注释里提示：" + "；".join(f"“{c}”" for c in ev.comments) + "。")
    if known:
        lines += ["", "已知（来自原文）："] + [f"- {k}" for k in known]
    lines += ["", "推理步骤：", f"1. 思路：{_PLAN[ev.kind]}。"]
    n = 2
    if ev.defined:
        lines.append(f"{n}. 从{'、'.join(ev.defined)}的定义出发，确定它能保证什么、不能保证什么。")
        n += 1
    if ev.conditions:
        lines.append(f"{n}. 逐一检查上面的条件：条件成立时结论如何，不成立时又会怎样。")
        n += 1
    if ev.code_lang and (ev.calls or ev.functions or ev.commands):
        key = (ev.calls or ev.functions or ev.commands)[0]
        lines.append(f"{n}. 看 `{key}` 在代码里的作用：它的输入从哪里来，结果被怎样使用。")
        n += 1
    if ev.figures:
        lines.append(f"{n}. 把 {ev.figures[0]} 这样的具体数值代入，确认量级与结论相符。")
        n += 1
    if n == 2:
        lines.append(f"{n}. 把{subject}放回上下文，按{_PLAN[ev.kind].split('，')[0][1:]}的顺序组织要点。")
    lines += [
        "",
        f"验证：检查{_CHECK[ev.kind]}；术语{('、'.join(terms[:3]) + '的') if terms else ''}用法与原文一致。",
    ]
    return "\n".join(lines)
