"""What a training attempt keeps on the output volume so the next attempt (OOM retry, gang restart after a GPU
failure) starts warm: LLaMA Factory's tokenized dataset and the Triton / TorchInductor kernel caches.

Tokenized dataset. LLaMA Factory 0.9.5 (llamafactory/data/loader.py ``get_dataset``) loads a saved dataset from
``tokenized_path`` when that directory is non-empty ("Loading dataset from disk will ignore other data
arguments") and otherwise preprocesses and saves there (``training_args.should_save``: global rank 0 only). Since
it then ignores every data argument, the path is keyed by everything that changes the tokenized rows
(``tokenized_key``): the dataset files' and tokenizer files' content, LLaMA Factory's version (``input_fingerprint``)
and the data arguments (``TOKENIZATION_ARGS``). The planner puts ``<output_dir>/.thinktune/tokenized/<key>`` into
the arguments; ``prepare_tokenized`` (in the worker) loads it when it is complete and otherwise lets rank 0 save
into a staging directory of this launch, which ``worker_callbacks.PublishTokenized`` renames into place at
``on_train_begin``: a
rename is atomic, so a rank of another node (LF's main-process-first is per node) or a later attempt never sees a
half-written dataset, and a launch killed while saving leaves only a stale ``.partial-*`` directory, removed by
the next publish.

Token lengths. The trainer's pre-flight count against cutoffLen (thinktune/train/lengths.py) needs the tokenizer
and a pass over the data in the parent; ``cached_lengths`` keeps the counts under the same input fingerprint.

Kernel caches. Liger's Triton kernels compile on first use (60-70 s of a cold start on the H200,
bench/NOTES-gpu.md); ``kernel_cache_env`` points TRITON_CACHE_DIR / TORCHINDUCTOR_CACHE_DIR at the output volume
unless they are set, so a restarted pod finds them compiled.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinktune.contract import ENV_KERNEL_CACHE, KERNEL_CACHE_PATH
from thinktune.fingerprint import hash_files

if TYPE_CHECKING:  # the planner imports this module: keep it free of resolve/lengths at import time
    from thinktune.train.lengths import Lengths

TOKENIZED_DIR = "tokenized"
LENGTHS_DIR = "lengths"
ENV_LAUNCH_ID = "THINKTUNE_LAUNCH_ID"  # one per launch, the same in every rank of the node: the staging name
# DatasetDict.save_to_disk writes it first; the final path only appears by a rename after the save returned, so
# there it means a whole dataset
COMPLETE_FILE = "dataset_dict.json"
PARTIAL = ".partial-"

# LLaMA Factory DataArguments (llamafactory/hparams/data_args.py) and the few others that change the tokenized
# rows. Left out: tokenized_path itself, overwrite_cache, data_shared_file_system, eval_num_beams. Packing is per
# map batch and shard, so the batch size and worker count count too; seed shuffles a val_size split.
TOKENIZATION_ARGS = (
    "stage",
    "model_name_or_path",
    "template",
    "dataset",
    "eval_dataset",
    "dataset_dir",
    "media_dir",
    "cutoff_len",
    "train_on_prompt",
    "mask_history",
    "streaming",
    "buffer_size",
    "mix_strategy",
    "interleave_probs",
    "preprocessing_batch_size",
    "preprocessing_num_workers",
    "max_samples",
    "ignore_pad_token_for_loss",
    "val_size",
    "eval_on_each_dataset",
    "packing",
    "neat_packing",
    "tool_format",
    "default_system",
    "enable_thinking",
    "preserve_thinking",
    "seed",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


def input_fingerprint(dataset_dir: str | os.PathLike[str], model_path: str) -> str:
    """The files behind the tokenized rows: dataset dir content, the tokenizer's files (a hub id by name) and
    LLaMA Factory's version (its templates and processors)."""
    model = Path(model_path)
    tok = hash_files(model, TOKENIZER_FILES) if model.is_dir() else f"hub:{model_path}"
    return f"{hash_files(Path(dataset_dir))}-{tok}-lf{_version('llamafactory')}"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # a source checkout on PYTHONPATH (bench/README.md's GPU recipe)
        return "unknown"


def tokenized_key(fingerprint: str, args: dict[str, Any]) -> str:
    """16 hex digits of the input fingerprint + the tokenization arguments as LLaMA Factory will get them."""
    used = {k: args.get(k) for k in TOKENIZATION_ARGS}
    blob = json.dumps({"inputs": fingerprint, "args": used}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tokenized_path(output_dir: str, fingerprint: str, args: dict[str, Any]) -> str:
    return f"{output_dir.rstrip('/')}/.thinktune/{TOKENIZED_DIR}/{tokenized_key(fingerprint, args)}"


def is_complete_save(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / COMPLETE_FILE).is_file()


def prepare_tokenized(
    args: dict[str, Any], env: os._Environ[str] | dict[str, str] = os.environ
) -> str | None:
    """Point ``args["tokenized_path"]`` at the complete cached dataset, or at this launch's staging directory
    (LF saves there on global rank 0; worker_callbacks.PublishTokenized renames it). Returns the final path (None: no cache
    planned)."""
    final = args.get("tokenized_path")
    if not final or is_complete_save(final):
        return final
    if Path(final).exists():  # user-given or foreign content: LF would load it as it is
        return final
    launch = env.get(ENV_LAUNCH_ID) or f"p{os.getppid()}"  # torchrun ranks share their parent
    rank = env.get("RANK", "0")
    # only global rank 0 saves; LF checks the path before any barrier, so a late rank given rank 0's path could
    # find it half-written: the others get a path nobody writes (they preprocess, LF's datasets cache helps)
    args["tokenized_path"] = f"{final}{PARTIAL}{launch}" + ("" if rank == "0" else f"-rank{rank}")
    return final


def kernel_cache_env(output_dir: str | os.PathLike[str], env: dict[str, str]) -> dict[str, str]:
    """TRITON_CACHE_DIR / TORCHINDUCTOR_CACHE_DIR where ``env`` does not set them: under ``THINKTUNE_KERNEL_CACHE``
    (the operator's shared directory at the root of the output's PVC: a fresh job on the cluster finds the kernels an
    earlier job compiled, 12 s of a fresh job's first step on an H100, bench/NOTES-gpu.md), else on the output
    volume (a restart finds its own); and a fresh launch id (the staging name of ``prepare_tokenized``). Both
    caches key their entries by source, compiler and GPU, and write by rename, so jobs can share one."""
    shared = env.get(ENV_KERNEL_CACHE)
    root = Path(shared) if shared else Path(output_dir) / KERNEL_CACHE_PATH
    out = {ENV_LAUNCH_ID: uuid.uuid4().hex[:12]}
    for name, sub in (("TRITON_CACHE_DIR", "triton"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        if not env.get(name):
            out[name] = str(root / sub)
    return out


def cached_lengths(
    output_dir: str | os.PathLike[str], fingerprint: str, count: Callable[[], Lengths]
) -> Lengths:
    """``count()`` once per input fingerprint (dataset + tokenizer files + LF version); later attempts read it."""
    from thinktune.train.lengths import Lengths

    key = hashlib.sha256(f"{fingerprint}-thinktune{_version('thinktune')}".encode()).hexdigest()[:16]
    path = Path(output_dir) / ".thinktune" / LENGTHS_DIR / f"{key}.json"
    try:
        return Lengths(
            per_split={k: [int(n) for n in v] for k, v in json.loads(path.read_text())["per_split"].items()}
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # absent or unreadable: count again
    lengths = count()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps({"per_split": lengths.per_split}))
    os.replace(tmp, path)  # the pods of a gang share the output dir: never a half-written file
    return lengths
