"""DatasetBuild: markdown corpus → validated Chinese/thinking training data for LLaMA Factory (sharegpt).

Entry point: ``build_dataset(spec, input_dir, output_dir, *, progress=True, tokenizer=None) -> dict`` (the
report.json contents); ``DatasetBuildError`` when nothing usable is produced. Submodules: markdown_parse
(markdown-it AST → sections/components), qa (question/answer detection), thinking (<thinking> trees, Qwen3
rendering, quality, generation), chinese (OpenCC, punctuation, jieba + glossary), glossary, samples, validate,
dedup, split, writer, document (one document → samples), build.

Attributes are imported lazily so ``import thinktune.data`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DatasetBuildError", "build_dataset", "content_hash", "status_from_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from thinktune.data import build

        return getattr(build, name)
    raise AttributeError(f"module 'thinktune.data' has no attribute {name!r}")
