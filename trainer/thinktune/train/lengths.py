"""Token lengths of the training data against cutoffLen, counted before training starts.

LLaMA Factory cuts every sample longer than ``cutoff_len`` without a word (the answer tail goes, so the model
learns answers that stop mid-sentence). A DatasetBuild validates against its own ``validation.cutoffLen``,
which need not be the FineTuneJob's, and a dataset may come from elsewhere: so the trainer counts again, with
the base model's tokenizer, on the same chat rendering the DatasetBuild uses (thinktune/data/validate.py).

``training.overlongSamples``: ``fail`` (default) stops with the numbers and the option to set; ``drop`` writes
the train/val files without the long samples to ``<output>/dataset/`` (dataset_info.json copied), the dropped
ones to ``<output>/overlong_rejects.jsonl``, and training reads that directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from thinktune.errors import InputError
from thinktune.resolve import ResolvedDataset

SPLITS_TRAINED = ("train", "val")  # what LLaMA Factory reads with cutoff_len (test is for evaluation)
REJECTS_FILE = "overlong_rejects.jsonl"


@dataclass
class Lengths:
    """Token counts per split, in file order."""

    per_split: dict[str, list[int]] = field(default_factory=dict)

    def counts(self, up_to: int | None = None) -> list[int]:
        """Every sample's count, all splits (only those of at most ``up_to`` tokens when given)."""
        return [n for v in self.per_split.values() for n in v if up_to is None or n <= up_to]

    @property
    def longest(self) -> int:
        return max(self.counts(), default=0)

    def over(self, cutoff: int) -> dict[str, list[int]]:
        """Row indices longer than ``cutoff``, per split."""
        return {s: [i for i, n in enumerate(v) if n > cutoff] for s, v in self.per_split.items()}

    def summary(self, cutoff: int) -> dict:
        over = self.over(cutoff)
        return {
            "cutoff_len": cutoff,
            "longest": self.longest,
            "samples": {s: len(v) for s, v in self.per_split.items()},
            "over_cutoff": {s: len(v) for s, v in over.items()},
        }


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))


def _messages(row: dict) -> list[dict[str, str]]:
    msgs = row.get("messages") or row.get("conversations") or []
    role = {"human": "user", "gpt": "assistant"}
    return [
        {
            "role": role.get(m.get("role") or m.get("from"), m.get("role") or m.get("from")),
            "content": m.get("content") or m.get("value") or "",
        }
        for m in msgs
    ]


def count_lengths(dataset: ResolvedDataset, tokenizer) -> Lengths:
    from thinktune.data.validate import render_chat, token_lengths

    out = Lengths()
    for split in SPLITS_TRAINED:
        f = dataset.split(split)
        if f is not None:
            out.per_split[split] = token_lengths([render_chat(_messages(r)) for r in _rows(f)], tokenizer)
    return out


def enforce_cutoff(
    dataset: ResolvedDataset, lengths: Lengths, cutoff: int, *, policy: str, output_dir: Path, what: str
) -> ResolvedDataset:
    """``dataset`` when nothing is too long; with ``policy`` drop, the filtered copy; else InputError."""
    over = lengths.over(cutoff)
    n_over = sum(len(v) for v in over.values())
    if n_over == 0:
        return dataset
    total = sum(len(v) for v in lengths.per_split.values())
    counts = ", ".join(f"{len(v)} of {len(lengths.per_split[s])} {s}" for s, v in over.items() if v)
    if policy != "drop":
        raise InputError(
            f"{what}: {n_over} of {total} samples ({counts}) are longer than spec.training.cutoffLen {cutoff} "
            f"tokens (longest {lengths.longest}) and LLaMA Factory would truncate them; set "
            f"spec.training.cutoffLen: {_round_up(lengths.longest)} (memory grows with it), or "
            "spec.training.overlongSamples: drop to train without them (listed in overlong_rejects.jsonl)"
        )
    return _drop(dataset, lengths, over, cutoff, output_dir)


def _round_up(n: int, step: int = 256) -> int:
    return max(step, -(-n // step) * step)


def _drop(
    dataset: ResolvedDataset, lengths: Lengths, over: dict[str, list[int]], cutoff: int, output_dir: Path
) -> ResolvedDataset:
    dst = Path(output_dir) / "dataset"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copy2(dataset.dir / "dataset_info.json", dst / "dataset_info.json")
    rejects = []
    for split, n_tokens in lengths.per_split.items():
        src = dataset.split(split)
        drop = set(over[split])
        rows = _rows(src)
        for i in sorted(drop):
            rejects.append({"split": split, "row": i, "tokens": n_tokens[i], "cutoff_len": cutoff, **rows[i]})
        kept = [r for i, r in enumerate(rows) if i not in drop]
        # the name dataset_info.json lists, in the format LLaMA Factory reads it
        (dst / src.name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
            if src.suffix == ".jsonl"
            else json.dumps(kept, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
    with (Path(output_dir) / REJECTS_FILE).open("w", encoding="utf-8") as fh:
        for r in rejects:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    kept = ResolvedDataset.inspect(dst)
    if not kept.train_samples:
        raise InputError(
            f"every training sample is longer than spec.training.cutoffLen {cutoff} (longest "
            f"{lengths.longest}); raise cutoffLen"
        )
    return kept
