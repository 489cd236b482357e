"""Four costs of LLaMA Factory's start-up that change nothing it computes, removed in the worker before it imports
LLaMA Factory's tuner (each measured in fresh processes on the 2-core development machine:
bench/results/worker_startup_cpu.json, bench/results/worker_startup_cpu_optional_imports.json,
bench/results/worker_startup_cpu_transformers_imports.json).

``lean_tokenizer_fingerprint``: ``datasets`` names each ``map`` result by a hash of the map function, and LLaMA
Factory's preprocessing function holds the tokenizer; datasets hashes a tokenizer by pickling its ``__dict__``. A
transformers 5 tokenizer keeps, next to the Rust tokenizer (``_tokenizer``, which pickles as its JSON in ~0.1 s),
the Python vocabulary and merge list it was built from (``_vocab``, ``_merges``: 151,643 entries and 294,166
pairs for Qwen3), and pickling those with datasets' key-sorting pickler was most of preprocessing 160 rows of
2,048 tokens (get_dataset 2.14 -> 0.56 s without them). The Rust tokenizer holds the same vocabulary and merges
(and every token added since), so the hash without the two copies still changes whenever the tokenization does
(tests/unit/test_worker_startup.py).

``skip_text_only_processor``: LLaMA Factory's ``load_tokenizer`` also calls ``AutoProcessor.from_pretrained``, which
for a model without any processor file loads the whole tokenizer a second time and returns it, and LLaMA Factory
then drops it ("not an instance of Processor"): load_tokenizer 3.82 -> 1.79 s without that call. For a local
model directory where ``AutoProcessor`` can find no processor (no processor / preprocessor / video / audio config,
no ``processor_class`` in its configs, an architecture transformers maps to no processor class) the call fails at
once instead; LLaMA Factory logs it and goes on with ``processor=None``, as it would have.

``skip_unused_optional_imports``: LLaMA Factory imports some optional libraries at module level whenever they are
installed, for features only some arguments use: matplotlib (pyplot, figure, the 3-D projections: ~1.2 s of the
worker's imports) for ``plot_loss``, jieba (~0.45 s, with pkg_resources) for ``predict_with_generate``'s Chinese
BLEU/ROUGE. thinktune plans neither (it draws its own report and evaluates on its own); for a run without the
feature LLaMA Factory's own availability switch (``extras.packages.is_*_available``, read when the module using it
is imported) says no, as it would on an image without the library. thinktune's own uses import them directly.

``skip_unused_transformers_imports``: the same for transformers: peft's utilities import transformers' loss
registry, which imports the object-detection losses, which import scipy.optimize for their Hungarian matching
whenever scipy is installed (LLaMA Factory requires it): 0.53 s of the tuner import here, for losses a language
model never calls. The registry is imported with transformers' scipy switch reading False, and the switch is put
back at once, so nothing imported later is misled (tests/unit/test_worker_startup.py). scipy.optimize is then never
imported; datasets still imports scipy.io when it loads raw files (get_dataset 0.26 s longer: 0.27 s saved net for
a fresh job), which a restart with the tokenized dataset cached does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# the tokenizer state datasets would pickle that the Rust tokenizer (``_tokenizer``) already holds
REDUNDANT_TOKENIZER_STATE = ("_vocab", "_merges")
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "audio_tokenizer_config.json",
)


def _fingerprint_tokenizer(pickler: Any, obj: Any) -> None:
    """datasets' own tokenizer reducer (its ``cache`` emptied) without the state the Rust tokenizer repeats."""
    state = {k: v for k, v in obj.__dict__.items() if k not in REDUNDANT_TOKENIZER_STATE}
    if "_tokenizer" not in state:  # a tokenizer without a Rust backend: its Python vocabulary is all there is
        state = dict(obj.__dict__)
    if isinstance(state.get("cache"), dict):
        state["cache"] = {}
    pickler.save_reduce(type(obj), (), state=state, obj=obj)


def lean_tokenizer_fingerprint() -> bool:
    """Make datasets' fingerprint pickler use ``_fingerprint_tokenizer`` for every tokenizer type it meets from now
    on (its pickler registers its tokenizer reducer per type on first sight, by this module-level name). Used
    only for hashing: datasets' worker processes receive the map function through ``multiprocess``'s own pickler.
    Returns False when datasets does not have the hook (another version): nothing changed."""
    try:
        from datasets.utils import _dill
    except ImportError:
        return False
    if not hasattr(_dill, "_save_transformersPreTrainedTokenizerBase"):
        return False
    _dill._save_transformersPreTrainedTokenizerBase = _fingerprint_tokenizer
    return True


def can_have_processor(model_path: str) -> bool:
    """Whether ``AutoProcessor.from_pretrained(model_path)`` could return a processor (not a bare tokenizer).
    True unless ``model_path`` is a local directory with none of the signs AutoProcessor looks for."""
    path = Path(model_path)
    if not path.is_dir():
        return True  # a hub id: not looked up here
    if any((path / name).is_file() for name in PROCESSOR_FILES):
        return True
    model_type = None
    for name in ("tokenizer_config.json", "config.json"):
        try:
            cfg = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if name == "config.json":
                return True  # no readable config: let AutoProcessor decide
            continue
        if not isinstance(cfg, dict) or cfg.get("processor_class"):
            return True
        model_type = cfg.get("model_type", model_type)
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return model_type is None or model_type in PROCESSOR_MAPPING_NAMES


class _TextOnlyAutoProcessor:
    """``AutoProcessor`` as LLaMA Factory's loader calls it, failing at once where no processor can exist."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        from transformers import AutoProcessor

        if not can_have_processor(str(pretrained_model_name_or_path)):
            raise OSError("text-only model (no processor files): thinktune skipped AutoProcessor")
        return AutoProcessor.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def skip_text_only_processor() -> bool:
    """Point LLaMA Factory's loader at ``_TextOnlyAutoProcessor``. False when the loader has no ``AutoProcessor``
    to replace (another LLaMA Factory version): nothing changed."""
    try:
        from llamafactory.model import loader
    except ImportError:
        return False
    if not hasattr(loader, "AutoProcessor"):
        return False
    loader.AutoProcessor = _TextOnlyAutoProcessor
    return True


# transformers' availability switch (in transformers.utils) -> the module that reads it at import for a library no
# causal-LM run calls: the object-detection losses (DETR family) bind scipy.optimize's Hungarian matching, and
# peft imports their registry (transformers.loss.loss_utils) with its own utilities
UNUSED_TRANSFORMERS_IMPORTS = {"is_scipy_available": "transformers.loss.loss_utils"}


def skip_unused_transformers_imports() -> list[str]:
    """Import each of ``UNUSED_TRANSFORMERS_IMPORTS``' modules while its switch reads False, then put the switch
    back, so the module leaves the library out and everything imported later still sees the truth. The switches
    that took effect (none where the module was already imported or the switch is missing)."""
    import importlib

    try:
        import transformers.utils as tu
    except ImportError:
        return []
    done = []
    for switch, module in UNUSED_TRANSFORMERS_IMPORTS.items():
        original = getattr(tu, switch, None)
        if module in sys.modules or not callable(original):
            continue
        setattr(tu, switch, lambda: False)
        try:
            importlib.import_module(module)
        finally:
            setattr(tu, switch, original)
        done.append(switch)
    return done


# LLaMA Factory argument -> (its availability switch in llamafactory.extras.packages, the module that reads it at import)
OPTIONAL_IMPORTS = {
    "plot_loss": ("is_matplotlib_available", "llamafactory.extras.ploting"),
    "predict_with_generate": ("is_jieba_available", "llamafactory.train.sft.metric"),
}


def skip_unused_optional_imports(args: dict[str, Any]) -> list[str]:
    """Turn off each of ``OPTIONAL_IMPORTS``' switches whose feature the run (LLaMA Factory ``args``) does not use,
    while the module that reads it is not imported yet. The switches turned off (none: every feature used, the
    modules already imported, or another LLaMA Factory version without the switches)."""
    try:
        from llamafactory.extras import packages
    except ImportError:
        return []
    off = []
    for arg, (switch, reader) in OPTIONAL_IMPORTS.items():
        if args.get(arg) or reader in sys.modules or not callable(getattr(packages, switch, None)):
            continue
        setattr(packages, switch, lambda: False)
        off.append(switch)
    return off


def skip_redundant_startup_work(args: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, bool]:
    """The four shortcuts for a run of LLaMA Factory ``args``, as the worker applies them before importing LLaMA
    Factory's tuner (bench/gpu_lf_run.py, which imports it first, gets the ones that still apply); each leaves
    things as they are where its hook is missing. Which took effect, by name; those named in ``leave_out`` are not
    applied (bench/worker_startup.py measures one with and without)."""
    shortcuts = {
        # first: the others import LLaMA Factory modules
        "unused_optional_imports": lambda: len(skip_unused_optional_imports(args)) == len(OPTIONAL_IMPORTS),
        # before LLaMA Factory's loader, which imports peft and through it the detection losses
        "unused_transformers_imports": lambda: (
            len(skip_unused_transformers_imports()) == len(UNUSED_TRANSFORMERS_IMPORTS)
        ),
        "lean_tokenizer_fingerprint": lean_tokenizer_fingerprint,
        "text_only_processor": skip_text_only_processor,
    }
    unknown = set(leave_out) - set(shortcuts)
    if unknown:
        raise ValueError(f"unknown start-up shortcut(s) {sorted(unknown)}; known: {sorted(shortcuts)}")
    return {name: False if name in leave_out else apply() for name, apply in shortcuts.items()}
