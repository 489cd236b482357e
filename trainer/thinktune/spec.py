"""The three thinktune custom resources as pydantic models: the single source of truth.

`thinktune crds` turns these models into the CRD YAMLs under crds/ (see crdgen.py); the operator, the local
runner and the pods all parse CRs through them. Field names are camelCase on the wire (Kubernetes convention),
borrowed from Kubeflow (numNodes, resourcesPerNode, backoffLimit, ...) and LLaMA Factory (cutoffLen, loraRank,
...) where users already know them. Cross-field rules are written twice on purpose: as CEL
(`x-kubernetes-validations`, enforced by the apiserver before the operator sees a CR) and as pydantic
validators (enforced locally by `thinktune run`); tests check that both reject the same bad CRs.

No torch import here: the operator image imports this module.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

GROUP = "thinktune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_BASE_MODEL = "Qwen/Qwen3-4B-Thinking-2507"
DEFAULT_TRAINER_IMAGE = "ghcr.io/thinktune/trainer:0.1.0"
BUILTIN_TOKENIZER = "builtin:qwen3"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class SpecModel(BaseModel):
    """Base: camelCase aliases, unknown fields rejected (a typo is an error, not a silent default)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )
    # CEL rules for the CRD schema of this object; mirrored by pydantic validators.
    cel_rules: ClassVar[list[dict[str, str]]] = []


class StatusModel(SpecModel):
    # Statuses are written by the operator/pods; tolerate fields from newer versions.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


# ---------------------------------------------------------------------------------------------------------
# Shared pieces


# ---------------------------------------------------------------------------------------------------------
# Admission rules every kind shares: each is a CEL/schema rule for the apiserver and the same check in pydantic.

#: Validation context of the in-cluster-only rules (a path is relative to its PVC: not absolute, no '..').
#: The operator parses CRs with it (`parse_cluster`); the local runner does not, so locally `--input ../x`
#: and absolute paths work. The CRD enforces these rules at admission either way.
CLUSTER: dict[str, Any] = {"cluster": True}

_PARENT = re.compile(r"(^|/)\.\.(/|$)")
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# a non-negative resource.Quantity ("2", "500m", "4Gi", "1e3"); a sign makes it invalid here on purpose
QUANTITY = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?$"
# LLaMA Factory arguments the operator and the planner own: an extraArgs override would write outside the
# job's output, train on other data or another model, or break resuming from the last checkpoint
MANAGED_LF_ARGS = (
    "model_name_or_path",
    "dataset_dir",
    "dataset",
    "eval_dataset",
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "template",
    "enable_thinking",
    "stage",
    "do_train",
    "finetuning_type",
    "deepspeed",
    "trust_remote_code",
)


def parse_cluster(model: type[BaseModel], data: Any) -> Any:
    """Validate `data` as `model` with the in-cluster rules on (what the operator does with a live CR)."""
    return model.model_validate(data, context=CLUSTER)


def cluster_path_error(value: str) -> str | None:
    """Why `value` cannot name a file inside a volume on a cluster, or None. A hub id (Qwen/Qwen3-4B) and an
    http(s) URL pass: neither is absolute nor climbs out with '..'."""
    if value.startswith("/"):
        return "must be relative (a path inside the volume), not absolute"
    if _PARENT.search(value):
        return "must not contain '..'"
    return None


def _cluster_path(value: str, info: ValidationInfo) -> str:
    if info.context and info.context.get("cluster"):
        err = cluster_path_error(value)
        if err:
            raise ValueError(f"path {value!r} {err}")
    return value


def _path_cel(max_length: int) -> Any:
    return Field(
        max_length=max_length,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.startsWith('/')", "path must be relative (a path inside the volume), not absolute"
                ),
                cel("!self.matches('(^|/)[.][.](/|$)')", "path must not contain '..'"),
            ]
        },
    )


# a path inside a PVC, a hub id or a URL; on a cluster neither absolute nor containing '..'
ClusterPath = Annotated[str, _path_cel(4096), AfterValidator(_cluster_path)]
Glob = Annotated[str, _path_cel(1024), AfterValidator(_cluster_path)]
FreeForm = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


def _check_quantities(section: str, values: Any) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{section} must be a map of resource name to quantity")
    for k, v in values.items():
        extended = "/" in k and not k.startswith(("kubernetes.io/", "hugepages-"))
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"{section}.{k}: {v!r} is not a quantity")
        if isinstance(v, int):
            ok = v >= 0
        else:
            ok = bool(re.fullmatch(r"[0-9]+", v)) if extended else bool(re.fullmatch(QUANTITY, v))
        if not ok:
            what = "a non-negative integer" if extended else "a non-negative quantity (e.g. 2, 500m, 4Gi)"
            raise ValueError(f"{section}.{k}: {v!r} must be {what}")


def _check_resources(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if key not in ("limits", "requests", "claims"):
            raise ValueError(f"resources: unknown key {key!r} (limits, requests or claims)")
    for section in ("limits", "requests"):
        if section in value:
            _check_quantities(section, value[section])
    return value


_QUANTITY_MAP = {
    "type": "object",
    "maxProperties": 16,
    "additionalProperties": {"x-kubernetes-int-or-string": True, "maxLength": 64},
    "x-kubernetes-validations": [
        cel(
            "self.all(k, type(self[k]) == int ? self[k] >= 0 : "
            "((k.contains('/') && !k.startsWith('kubernetes.io/') && !k.startsWith('hugepages-')) "
            f"? string(self[k]).matches('^[0-9]+$') : string(self[k]).matches(r'{QUANTITY}')))",
            "resource quantities must be non-negative; extended resources such as nvidia.com/gpu "
            "must be whole numbers",
        )
    ],
}
# corev1.ResourceRequirements with quantities checked at admission (a GPU limit of -1 or "lots" is rejected)
ResourceList = Annotated[
    dict[str, Any],
    Field(
        json_schema_extra={
            "properties": {
                "limits": {
                    **_QUANTITY_MAP,
                    "description": "Maximum amount of each resource (e.g. nvidia.com/gpu).",
                },
                "requests": {
                    **_QUANTITY_MAP,
                    "description": "Amount of each resource the scheduler reserves.",
                },
                "claims": {
                    "type": "array",
                    "description": "Dynamic resource claims (passed through).",
                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }
        }
    ),
    AfterValidator(_check_resources),
]


def _check_env(value: dict[str, Any]) -> dict[str, Any]:
    name = value.get("name")
    if not isinstance(name, str) or not re.fullmatch(ENV_NAME, name):
        raise ValueError(f"env entry {value!r}: name must match {ENV_NAME}")
    extra = set(value) - {"name", "value", "valueFrom"}
    if extra:
        raise ValueError(f"env entry {name}: unknown key(s) {sorted(extra)}")
    if len(str(value.get("value") or "")) > 4096:
        raise ValueError(f"env entry {name}: value longer than 4096 characters")
    return value


EnvVar = Annotated[
    dict[str, Any],
    Field(
        json_schema_extra={
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "pattern": ENV_NAME,
                    "description": "Variable name.",
                },
                "value": {"type": "string", "maxLength": 4096, "description": "Value."},
                "valueFrom": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "description": "Source of the value (EnvVarSource, passed through).",
                },
            },
        }
    ),
    AfterValidator(_check_env),
]

_TOLERATION_OPERATORS = ("Exists", "Equal")
_TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


def _check_toleration(value: dict[str, Any]) -> dict[str, Any]:
    extra = set(value) - {"key", "operator", "value", "effect", "tolerationSeconds"}
    if extra:
        raise ValueError(f"toleration {value!r}: unknown key(s) {sorted(extra)}")
    if value.get("operator", "Equal") not in _TOLERATION_OPERATORS:
        raise ValueError(f"toleration {value!r}: operator must be Exists or Equal")
    if value.get("effect", "") not in _TOLERATION_EFFECTS:
        raise ValueError(f"toleration {value!r}: effect must be NoSchedule, PreferNoSchedule or NoExecute")
    if value.get("operator") == "Exists" and value.get("value"):
        raise ValueError(f"toleration {value!r}: value must be empty when operator is Exists")
    if not value.get("key") and value.get("operator") != "Exists":
        raise ValueError(f"toleration {value!r}: an empty key needs operator Exists")
    if "tolerationSeconds" in value and not isinstance(value["tolerationSeconds"], int):
        raise ValueError(f"toleration {value!r}: tolerationSeconds must be an integer")
    return value


Toleration = Annotated[
    dict[str, Any],
    Field(
        json_schema_extra={
            "properties": {
                "key": {"type": "string", "maxLength": 316, "description": "Taint key (empty: all)."},
                "operator": {
                    "type": "string",
                    "enum": list(_TOLERATION_OPERATORS),
                    "description": "Exists or Equal (default Equal).",
                },
                "value": {"type": "string", "maxLength": 63, "description": "Taint value (operator Equal)."},
                "effect": {
                    "type": "string",
                    "enum": list(_TOLERATION_EFFECTS),
                    "description": "Taint effect to tolerate (empty: all).",
                },
                "tolerationSeconds": {
                    "type": "integer",
                    "description": "How long a NoExecute taint is tolerated.",
                },
            },
            "x-kubernetes-validations": [
                cel(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "toleration value must be empty when operator is Exists",
                ),
                cel(
                    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                    "a toleration with an empty key needs operator Exists",
                ),
            ],
        }
    ),
    AfterValidator(_check_toleration),
]


def _check_node_selector(value: dict[str, str]) -> dict[str, str]:
    for k, v in value.items():
        if not re.fullmatch(LABEL_KEY, k) or len(k) > 316:
            raise ValueError(f"nodeSelector key {k!r} is not a valid label key")
        if not re.fullmatch(LABEL_VALUE, v):
            raise ValueError(f"nodeSelector {k}: {v!r} is not a valid label value")
    return value


NodeSelector = Annotated[
    dict[str, str],
    Field(
        max_length=64,
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": 63},
            "x-kubernetes-validations": [
                cel(
                    f"self.all(k, size(k) <= 316 && k.matches(r'{LABEL_KEY}'))",
                    "nodeSelector keys must be valid label keys",
                ),
                cel(
                    f"self.all(k, self[k].matches(r'{LABEL_VALUE}'))",
                    "nodeSelector values must be valid label values",
                ),
            ],
        },
    ),
    AfterValidator(_check_node_selector),
]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]


class Volume(SpecModel):
    """Where files live. Locally `path` is a directory on this machine; on Kubernetes it is a path inside the
    PersistentVolumeClaim `pvc` (mounted by the operator)."""

    path: ClusterPath = Field(
        min_length=1,
        description="Directory. Locally a path on disk (relative paths are relative to the CR file); "
        "on a cluster a relative path inside the PVC (no '..'). Edits apply at the next attempt.",
    )
    pvc: ObjectName | None = Field(
        default=None,
        description="PersistentVolumeClaim holding `path` (cluster only). "
        "Empty: the operator's default workspace PVC.",
    )


class PodOptions(SpecModel):
    """Pod-level knobs passed through to every pod the operator creates for this resource. Edits apply to pods
    created afterwards (the next attempt); running pods keep theirs."""

    image: str = Field(
        default=DEFAULT_TRAINER_IMAGE,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Workload image (images/trainer.Dockerfile).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the workload container."
    )
    service_account_name: ObjectName | None = Field(
        default=None,
        description="ServiceAccount of the pods; the operator accepts only accounts on its allow-list "
        "(Helm value allowedServiceAccounts; default: the namespace's default account).",
    )
    node_selector: NodeSelector = Field(default_factory=dict, description="Node selector (passed through).")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Tolerations (passed through)."
    )
    affinity: FreeForm | None = Field(
        default=None,
        description="Affinity (passed through; the operator adds anti-affinity for nodes that failed).",
    )
    priority_class_name: ObjectName | None = Field(default=None, description="PriorityClass of the pods.")
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=100,
        description="Extra environment variables (EnvVar list; values up to 4096 characters).",
    )


class Condition(StatusModel):
    """Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Running, Succeeded, Failed, Suspended, Restarting.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: datetime | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(default=None, description="metadata.generation this is based on.")


Phase = Literal["Pending", "Waiting", "Blocked", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]


class PendingEvent(StatusModel):
    """An Event the operator decided to post and has not yet confirmed (handlers/runtime.py `commit`)."""

    name: str = Field(description="The Event's object name (reposting after a crash is then idempotent).")
    type: Literal["Normal", "Warning"] = Field(description="Event type.")
    reason: str = Field(description="Event reason.")
    message: str = Field(default="", description="Event message.")


class CommonStatus(StatusModel):
    phase: Phase | None = Field(default=None, description="Coarse lifecycle phase.")
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    observed_generation: int | None = Field(default=None, description="Last metadata.generation acted upon.")
    start_time: datetime | None = Field(default=None, description="When work started.")
    completion_time: datetime | None = Field(
        default=None, description="When work finished (success or failure)."
    )
    message: str | None = Field(default=None, description="Latest human-readable summary.")
    report_path: str | None = Field(default=None, description="Path of report.json written by the workload.")
    pending_events: list[PendingEvent] | None = Field(
        default=None,
        description="Events journaled with the decision that implies them and not yet posted; normally "
        "absent (an operator restart posts what is left here).",
    )


# ---------------------------------------------------------------------------------------------------------
# DatasetBuild


class SplitSpec(SpecModel):
    train: float = Field(default=0.7, gt=0, lt=1, description="Fraction of samples for training.")
    val: float = Field(
        default=0.15, ge=0, lt=1, description="Fraction for validation (eval during training)."
    )
    test: float = Field(
        default=0.15, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    seed: int = Field(default=42, description="Seed: the same corpus and seed give the same split.")
    stratify_by: list[Literal["type", "term"]] = Field(
        default_factory=lambda: ["type", "term"],
        description="Balance splits by sample type (qa/code/thinking/section) and by cryptography term.",
    )
    cel_rules: ClassVar = [
        cel(
            "self.train + self.val + self.test > 0.999 && self.train + self.val + self.test < 1.001",
            "split fractions train+val+test must sum to 1 (e.g. 0.7/0.15/0.15)",
        ),
    ]

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if not 0.999 < total < 1.001:
            raise ValueError(
                f"split fractions train+val+test must sum to 1 (e.g. 0.7/0.15/0.15), got {total:g}"
            )
        return self


class ChineseSpec(SpecModel):
    opencc: Literal["t2s", "tw2s", "tw2sp", "hk2s", "none"] = Field(
        default="t2s",
        description="OpenCC profile for Traditional→Simplified conversion ('none' keeps text as is).",
    )
    normalize_punctuation: bool = Field(
        default=True,
        description="Half-width punctuation between CJK characters becomes full-width; "
        "code and URLs are never touched.",
    )
    glossary: ClusterPath | None = Field(
        default=None,
        description="Extra glossary file (one term per line, optional 'term<TAB>category'), "
        "merged with the shipped cryptography glossary.",
    )


class ThinkingSpec(SpecModel):
    generate: Literal["template", "model", "none"] = Field(
        default="template",
        description="How samples without a <thinking> block get one: 'template' builds a rule-based "
        "analysis → steps → verification trace from the chunk's evidence; 'model' asks teacherModel; 'none' "
        "rejects such samples (a thinking model must not be trained on empty <think> blocks).",
    )
    teacher_model: ClusterPath | None = Field(
        default=None,
        description="Teacher that writes reasoning when generate=model: an OpenAI-compatible endpoint "
        "('http(s)://host:port/v1', e.g. vLLM or Ollama; bearer token from env THINKTUNE_TEACHER_API_KEY) "
        "or a local path / hub id of a transformers causal LM.",
    )
    teacher_model_name: str | None = Field(
        default=None,
        description="The 'model' field sent to an endpoint teacher (default 'default').",
    )
    nested: Literal["keep", "flatten"] = Field(
        default="keep",
        description="Nested <thinking> levels: keep as nested tags or flatten into numbered steps.",
    )
    min_quality: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Minimum thinking-quality score (analysis, steps, verification, coherence with answer).",
    )
    extra_questions_per_chunk: int = Field(
        default=0,
        ge=0,
        le=20,
        description="Extra questions the teacher model proposes per section chunk (0: none), each answerable "
        "from the chunk alone and answered by the teacher with thinking. Such samples are marked "
        "teacher-generated; one is kept only when its thinking passes the quality gate, its answer is "
        "grounded in the chunk and its question does not repeat one the author asks there; rejects are in "
        "rejects.jsonl and counted in the report. Needs teacherModel.",
    )
    cel_rules: ClassVar = [
        cel(
            "self.generate != 'model' || (has(self.teacherModel) && self.teacherModel != '')",
            "thinking.teacherModel is required when thinking.generate is 'model'",
            ".teacherModel",
        ),
        cel(
            "!has(self.extraQuestionsPerChunk) || self.extraQuestionsPerChunk == 0 || "
            "(has(self.teacherModel) && self.teacherModel != '')",
            "thinking.teacherModel is required when thinking.extraQuestionsPerChunk is above 0",
            ".teacherModel",
        ),
    ]

    @model_validator(mode="after")
    def _teacher(self) -> ThinkingSpec:
        if self.generate == "model" and not self.teacher_model:
            raise ValueError("thinking.teacherModel is required when thinking.generate is 'model'")
        if self.extra_questions_per_chunk and not self.teacher_model:
            raise ValueError(
                "thinking.teacherModel is required when thinking.extraQuestionsPerChunk is above 0"
            )
        return self


class ValidationSpec(SpecModel):
    tokenizer: ClusterPath = Field(
        default=BUILTIN_TOKENIZER,
        description="Tokenizer used for length checks: "
        f"'{BUILTIN_TOKENIZER}' (the real Qwen3 tokenizer, built offline) or a path/hub id.",
    )
    cutoff_len: int = Field(
        default=4096,
        ge=128,
        le=262144,
        description="Maximum tokens per sample (prompt + "
        "thinking + answer). Longer samples are rejected and reported, never truncated.",
    )


class DedupSpec(SpecModel):
    enabled: bool = Field(default=True, description="Drop exact and near duplicates before splitting.")
    near_duplicate_threshold: float = Field(
        default=0.9,
        ge=0.5,
        le=1.0,
        description="Character 5-gram Jaccard similarity at or above which two samples count as duplicates.",
    )


class DatasetBuildSpec(SpecModel):
    source: Volume = Field(description="Directory of markdown documents (*.md, searched recursively).")
    output: Volume = Field(
        description="Directory that receives dataset_info.json, train/val/test.json, "
        "report.json, report.md and rejects.jsonl."
    )
    include: list[Glob] = Field(
        default_factory=lambda: ["**/*.md"], max_length=100, description="Glob patterns of documents."
    )
    exclude: list[Glob] = Field(default_factory=list, max_length=100, description="Glob patterns to skip.")
    dataset_name: str = Field(
        default="thinktune",
        pattern=r"^[a-z0-9][a-z0-9_\-]*$",
        description="Prefix of the dataset names in dataset_info.json (NAME_train, ...).",
    )
    split: SplitSpec = Field(default_factory=SplitSpec, description="Train/val/test split.")
    chinese: ChineseSpec = Field(default_factory=ChineseSpec, description="Chinese normalisation.")
    thinking: ThinkingSpec = Field(
        default_factory=ThinkingSpec, description="Thinking parsing and generation."
    )
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="Sample validation.")
    dedup: DedupSpec = Field(default_factory=DedupSpec, description="De-duplication.")
    system_prompt: str | None = Field(
        default=None,
        max_length=65536,
        description="System prompt added to every sample (heading context is added when empty).",
    )
    workers: int | None = Field(
        default=None, ge=1, le=256, description="Worker processes (default: all cores)."
    )
    pod: PodOptions = Field(default_factory=PodOptions, description="Pod options on a cluster.")
    resources: ResourceList = Field(
        default={"requests": {"cpu": "2", "memory": "4Gi"}},
        description="ResourceRequirements of the build pod.",
    )


class DatasetCounts(StatusModel):
    documents: int = Field(default=0, description="Markdown documents read.")
    samples: int = Field(default=0, description="Valid samples written.")
    train: int = Field(default=0, description="Samples in train.json.")
    val: int = Field(default=0, description="Samples in val.json.")
    test: int = Field(default=0, description="Samples in test.json.")
    rejects: int = Field(default=0, description="Samples in rejects.jsonl.")
    duplicates: int = Field(default=0, description="Duplicates removed.")
    generated_thinking: int = Field(default=0, description="Samples whose thinking was generated.")
    warnings: int = Field(default=0, description="Warnings in report.json.")


class DatasetBuildStatus(CommonStatus):
    counts: DatasetCounts | None = Field(default=None, description="Sample counts from report.json.")
    output_path: str | None = Field(default=None, description="Dataset directory (dataset_info.json).")
    content_hash: str | None = Field(
        default=None, description="Hash of inputs+spec; a rebuild is skipped when unchanged."
    )


# ---------------------------------------------------------------------------------------------------------
# FineTuneJob


class ModelSource(SpecModel):
    name_or_path: ClusterPath = Field(
        default=DEFAULT_BASE_MODEL,
        min_length=1,
        description="Base model: hub id or path (on a cluster a relative path inside `pvc`, no '..').",
    )
    make_tiny: bool = Field(
        default=False,
        description="If the path does not exist, create a tiny random Qwen3 "
        "with the real tokenizer there (`thinktune make-tiny-model`): for CPU smoke runs.",
    )
    pvc: ObjectName | None = Field(
        default=None, description="PVC holding name_or_path when it is a path (cluster)."
    )


class DatasetRef(SpecModel):
    name: ObjectName = Field(description="Name of a resource in the same namespace; the job waits for it.")


class LoraSpec(SpecModel):
    rank: int | None = Field(
        default=None, ge=1, le=1024, description="LoRA rank (default: planner's choice)."
    )
    alpha: int | None = Field(default=None, ge=1, le=4096, description="LoRA alpha (default: 2×rank).")
    dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="LoRA dropout. Default 0: on an H200 dropout 0.05 cost 9.4 % of the tokens/s and 15 GiB "
        "(bench/results/gpu-train-2026-12-01.json); set it for small datasets prone to overfitting. Edits apply "
        "at the next attempt.",
    )
    target: str = Field(
        default="all", description="Target modules ('all' = every linear layer but the head)."
    )


class TrainingSpec(SpecModel):
    num_train_epochs: float = Field(default=3.0, gt=0, le=1000, description="Epochs.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Peak learning rate (default: the planner's choice by method and model size: LoRA 1e-4 "
        "from 0.1 B parameters, 5e-5 from 30 B, 1e-2 for the sub-0.1 B test models of make-tiny-model; full "
        "fine-tuning 1e-5, 1e-3 for test models).",
    )
    global_batch_size: int = Field(
        default=16,
        ge=1,
        le=65536,
        description="Samples per optimizer step across all "
        "GPUs; the planner keeps it when it changes micro-batch/accumulation.",
    )
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Per-device micro-batch (default: planner's choice from memory).",
    )
    cutoff_len: int = Field(
        default=4096,
        ge=128,
        le=262144,
        description="Max tokens per sample. Checked against the dataset before training: longer samples fail "
        "the job (or are dropped, see overlongSamples), never truncated. Left out of a local YAML, the planner "
        "takes the longest sample rounded up to 256 (within the model's context).",
    )
    overlong_samples: Literal["fail", "drop"] = Field(
        default="fail",
        description="Samples longer than cutoffLen: fail (say how many, the longest, what to set) or drop "
        "them into <output>/overlong_rejects.jsonl and train on the rest.",
    )
    memory_budget_gib: float | None = Field(
        default=None,
        alias="memoryBudgetGiB",
        ge=1,
        le=4096,
        description="GPU memory per device the job may use, in GiB (default: what the card offers). The planner "
        "sizes micro-batch, checkpointing and strategy to stay under it and the worker caps PyTorch's allocator "
        "at it, so exceeding it is an OOM the trainer retries with a smaller micro-batch. Edits apply at the next "
        "attempt.",
    )
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Fraction of steps for warm-up.")
    weight_decay: float = Field(default=0.0, ge=0, description="Weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping.")
    logging_steps: int = Field(default=5, ge=1, description="Log every N steps.")
    eval_steps: int | None = Field(
        default=None, ge=1, description="Evaluate every N steps (default: ~10 per run)."
    )
    save_steps: int | None = Field(
        default=None,
        ge=1,
        description="Checkpoint every N steps (bounds the work lost on a restart; default: ~10 per run).",
    )
    save_total_limit: int = Field(default=3, ge=1, description="Checkpoints kept.")
    seed: int = Field(default=42, description="Training seed.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="auto: bf16 where supported, else fp16; fp32 on CPU."
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto", description="auto: only when activations would not fit."
    )
    liger_kernel: Literal["auto", "on", "off"] = Field(
        default="auto", description="Liger fused kernels (auto: on CUDA when installed)."
    )
    packing: bool = Field(default=False, description="Pack samples (neat packing; no cross-contamination).")
    mask_history: bool = Field(
        default=True,
        description="Train only the last turn of multi-turn samples "
        "(Qwen3 drops history reasoning at inference).",
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        max_length=100,
        json_schema_extra={
            "x-kubernetes-preserve-unknown-fields": True,
            # CEL cannot see undeclared keys of a preserved map: each managed key is declared and refused
            "properties": {
                a: {
                    "x-kubernetes-int-or-string": True,
                    "description": "Managed by the operator: cannot be set.",
                    "x-kubernetes-validations": [
                        cel("false", f"extraArgs must not override arguments the operator manages: {a}")
                    ],
                }
                for a in MANAGED_LF_ARGS
            },
        },
        description="Extra LLaMA Factory arguments; they win over the planner (use with care). The arguments "
        f"the operator manages ({', '.join(MANAGED_LF_ARGS)}) are rejected.",
    )
    cel_rules: ClassVar = [
        cel(
            "!has(self.microBatchSize) || self.microBatchSize <= self.globalBatchSize",
            "microBatchSize must not exceed globalBatchSize",
            ".microBatchSize",
        ),
    ]

    @model_validator(mode="after")
    def _micro_le_global(self) -> TrainingSpec:
        if self.micro_batch_size is not None and self.micro_batch_size > self.global_batch_size:
            raise ValueError("training.microBatchSize must not exceed training.globalBatchSize")
        managed = sorted(set(self.extra_args) & set(MANAGED_LF_ARGS))
        if managed:
            raise ValueError(
                f"extraArgs must not override arguments the operator manages: {', '.join(managed)}"
            )
        return self


Strategy = Literal["auto", "single", "ddp", "zero2", "zero3", "zero3_offload", "fsdp", "megatron"]


class FineTuningSpec(SpecModel):
    method: Literal["lora", "qlora", "full", "freeze"] = Field(
        default="lora", description="lora, qlora (4/8-bit base + LoRA), full or freeze."
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (lora/qlora).")
    quantization_bit: Literal[4, 8] | None = Field(
        default=None, description="QLoRA base precision (default 4)."
    )
    strategy: Strategy = Field(default="auto", description="Parallel strategy; auto lets the planner choose.")
    cel_rules: ClassVar = [
        cel(
            "!has(self.quantizationBit) || self.method == 'qlora'",
            "quantizationBit is only valid with method qlora",
            ".quantizationBit",
        ),
        cel(
            "self.method != 'qlora' || !(self.strategy in ['zero3', 'zero3_offload', 'megatron'])",
            "qlora does not work with DeepSpeed ZeRO-3 or Megatron; use strategy fsdp or ddp",
            ".strategy",
        ),
        cel(
            "self.strategy != 'megatron' || self.method == 'full'",
            "LLaMA Factory 0.9.5's Megatron path supports full fine-tuning only",
            ".strategy",
        ),
    ]

    @model_validator(mode="after")
    def _combos(self) -> FineTuningSpec:
        if self.quantization_bit is not None and self.method != "qlora":
            raise ValueError("finetuning.quantizationBit is only valid with method qlora")
        if self.method == "qlora" and self.strategy in ("zero3", "zero3_offload", "megatron"):
            raise ValueError(
                "finetuning: qlora does not work with DeepSpeed ZeRO-3 or Megatron; use strategy fsdp or ddp"
            )
        if self.strategy == "megatron" and self.method != "full":
            raise ValueError(
                "finetuning.strategy megatron: LLaMA Factory 0.9.5's Megatron path supports full "
                "fine-tuning only"
            )
        return self


class SchedulingPolicy(SpecModel):
    gang_scheduler: Literal["none", "coscheduling", "volcano"] = Field(
        default="none", description="Create a PodGroup for this scheduler."
    )
    queue: ObjectName | None = Field(
        default=None, description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name) or Volcano queue."
    )
    priority_class: ObjectName | None = Field(default=None, description="PriorityClass of the PodGroup.")
    schedule_timeout_seconds: int = Field(default=300, ge=1, description="Gang scheduling timeout.")


class RunPolicy(SpecModel):
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="Application failures (bugs, bad data) before the job fails."
    )
    infra_failure_limit: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Infrastructure failures (GPU, node, "
        "eviction) tolerated; counted apart from backoffLimit.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job after this long."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the job this long after it finished."
    )
    suspend: bool = Field(
        default=False, description="Suspend: delete the pods, keep checkpoints; resume by setting false."
    )
    clean_pod_policy: Literal["All", "Running", "None"] = Field(
        default="Running", description="Pods deleted when the job finishes."
    )
    scheduling_policy: SchedulingPolicy = Field(
        default_factory=SchedulingPolicy, description="Gang scheduling."
    )


class MonitoringSpec(SpecModel):
    metrics_port: int = Field(default=9400, ge=1024, le=65535, description="Prometheus port of trainer pods.")
    loss_spike_factor: float = Field(
        default=3.0, gt=1, description="Warn when loss exceeds this multiple of its recent average."
    )
    plateau_evals: int = Field(
        default=5, ge=2, description="Warn when val loss has not improved for N evals."
    )


class EvaluationSpec(SpecModel):
    enabled: bool = Field(default=True, description="Evaluate on the test split after training.")
    max_samples: int = Field(default=64, ge=1, description="Test samples used for generation metrics.")
    max_new_tokens: int = Field(
        default=1024, ge=1, description="Generation length (thinking traces are long)."
    )
    decoding: Literal["sampling", "greedy"] = Field(
        default="sampling",
        description="sampling: the model's own generation_config (Qwen3-Thinking-2507: temperature 0.6, "
        "top_p 0.95, top_k 20), seeded by `seed`, as its model card asks (greedy decoding makes thinking "
        "models repeat themselves endlessly); greedy: the argmax at every step.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the sampled generations (reproducible runs).")
    base_samples: int = Field(
        default=4,
        ge=0,
        le=10000,
        description="Test samples the base model (without the adapter) also answers, for the base vs "
        "fine-tuned comparison in the report and the blind A/B expert review; 0 turns it off.",
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"rougeL": 0.2, "termAccuracy": 0.5},
        max_length=32,
        description="Minimum metric values; below them the report recommends actions.",
    )


class FineTuneJobSpec(SpecModel):
    model: ModelSource = Field(default_factory=ModelSource, description="Base model.")
    dataset_ref: DatasetRef | None = Field(
        default=None, description="DatasetBuild to train on (waits for it)."
    )
    dataset: Volume | None = Field(default=None, description="Or: a directory with dataset_info.json.")
    template: str = Field(
        default="qwen3",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="LLaMA Factory chat template name (qwen3 for Thinking-2507).",
    )
    enable_thinking: bool = Field(
        default=True, description="Keep and train the <think> reasoning (must stay true for thinking models)."
    )
    finetuning: FineTuningSpec = Field(default_factory=FineTuningSpec, description="Method and strategy.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyper-parameters.")
    num_nodes: int = Field(
        default=1,
        ge=1,
        le=1024,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "numNodes is immutable: delete and recreate the job to resize it "
                    "(a job with the same output resumes from its last checkpoint)",
                )
            ]
        },
        description="Worker pods (one per node). Immutable: to resize, delete the job and create it again "
        "with the same output (it resumes from the last checkpoint).",
    )
    num_proc_per_node: int | Literal["auto"] = Field(
        default="auto", description="Processes per pod, 1 to 64 (auto: one per GPU, or 1 on CPU)."
    )
    resources_per_node: ResourceList = Field(
        default={"limits": {"nvidia.com/gpu": 1}},
        description="ResourceRequirements of each worker pod (nvidia.com/gpu in limits).",
    )
    output: Volume = Field(description="Adapter, checkpoints, metrics and report.")
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Metrics and anomaly alerts."
    )
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="Post-training evaluation."
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Restarts, deadlines, suspension.")
    pod: PodOptions = Field(default_factory=PodOptions, description="Pod options on a cluster.")
    max_oom_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="On CUDA OOM: halve the micro-batch, double accumulation and retry this many times.",
    )
    cel_rules: ClassVar = [
        cel(
            "has(self.datasetRef) != has(self.dataset)",
            "set exactly one of datasetRef (a DatasetBuild) or dataset (a directory)",
        ),
        cel(
            "self.enableThinking || !(self.template in ['qwen3'])",
            "enableThinking must stay true with template qwen3 (training without reasoning erases it)",
            ".enableThinking",
        ),
        cel(
            "type(self.numProcPerNode) == int || self.numProcPerNode == 'auto'",
            "numProcPerNode must be an integer or 'auto'",
            ".numProcPerNode",
        ),
        cel(
            "type(self.numProcPerNode) != int || (self.numProcPerNode >= 1 && self.numProcPerNode <= 64)",
            "numProcPerNode must be between 1 and 64",
            ".numProcPerNode",
        ),
        cel(
            "self.numNodes == 1 || self.finetuning.strategy != 'single'",
            "strategy single cannot use more than one node",
            ".finetuning.strategy",
        ),
    ]

    @model_validator(mode="after")
    def _combos(self) -> FineTuneJobSpec:
        if (self.dataset_ref is None) == (self.dataset is None):
            raise ValueError("set exactly one of datasetRef (a DatasetBuild) or dataset (a directory)")
        if self.template == "qwen3" and not self.enable_thinking:
            raise ValueError(
                "enableThinking must stay true with template qwen3 (training without reasoning erases it)"
            )
        if self.num_nodes > 1 and self.finetuning.strategy == "single":
            raise ValueError("finetuning.strategy single cannot use more than one node")
        if isinstance(self.num_proc_per_node, int) and not 1 <= self.num_proc_per_node <= 64:
            raise ValueError("numProcPerNode must be between 1 and 64")
        return self


class TrainingProgress(StatusModel):
    step: int = Field(default=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, description="Planned optimizer steps.")
    percent: float | None = Field(default=None, description="step/totalSteps in percent.")
    epoch: float | None = Field(default=None, description="Current epoch.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest validation loss.")
    learning_rate: float | None = Field(default=None, description="Current learning rate.")
    tokens_per_second: float | None = Field(default=None, description="Throughput over all ranks.")
    eta_seconds: float | None = Field(default=None, description="Estimated time to finish.")
    summary: str | None = Field(default=None, description="e.g. '120/500 (24%)'; printer column.")
    anomalies: dict[str, int] = Field(
        default_factory=dict,
        description="Anomalies the trainer reported so far, "
        "by kind (loss_spike, nan, divergence, plateau, memory_growth); each "
        "increase is posted as a TrainingAnomaly Event.",
    )


class FailureRecord(StatusModel):
    node: str | None = Field(default=None, description="Node the failure happened on.")
    gpu: str | None = Field(default=None, description="GPU index/UUID when known.")
    reason: str = Field(description="Why it was judged an infrastructure failure.")
    time: datetime | None = Field(default=None, description="When it was detected.")
    node_unhealthy: bool | None = Field(
        default=None,
        description="The node itself looked broken (NotReady, cordoned, tainted, GPUs missing): it is used "
        "again as soon as it looks healthy; otherwise after THINKTUNE_FAILED_NODE_TTL_SECONDS.",
    )
    avoided: bool | None = Field(
        default=None,
        description="false when the failure does not implicate the node (an eviction or preemption, a worker "
        "deleted from outside): new gangs may use the node at once, its own condition decides. Otherwise new "
        "gangs keep off it until it is forgiven (see nodeUnhealthy).",
    )


class RestartCounts(StatusModel):
    application: int = Field(default=0, description="Restarts after application failures (backoffLimit).")
    infrastructure: int = Field(
        default=0, description="Restarts after GPU/node failures (infraFailureLimit)."
    )
    oom: int = Field(default=0, description="OOM retries inside the trainer.")


class FineTuneJobStatus(CommonStatus):
    progress: TrainingProgress | None = Field(default=None, description="Live progress from the trainer.")
    restarts: RestartCounts = Field(default_factory=RestartCounts, description="Restart counters.")
    failed_nodes: list[FailureRecord] = Field(
        default_factory=list, description="Nodes/GPUs avoided after failure."
    )
    attempt: int = Field(default=0, description="Current gang attempt (pods are named after it).")
    plan: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Planner decisions (strategy, micro-batch, LoRA rank, ...).",
    )
    adapter_path: str | None = Field(default=None, description="Final adapter directory.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Final metrics (eval loss, char/term accuracy, ROUGE-L, ...)."
    )


# ---------------------------------------------------------------------------------------------------------
# ModelExport


class QuantizeSpec(SpecModel):
    method: Literal["int8", "int4", "gptq"] = Field(
        description="int8 / int4: weight-only round-to-nearest (no calibration); gptq: calibrated weight-only "
        "(AutoRound: rounding tuned block by block on calibration text from the train split). All through "
        "auto-round, on CPU or GPU."
    )
    bits: Literal[4, 8] | None = Field(
        default=None, description="Weight bits of gptq (default 4); int8/int4 imply theirs."
    )
    format: Literal["compressed-tensors", "gptq"] = Field(
        default="compressed-tensors",
        description="Checkpoint format: compressed-tensors (vLLM; transformers with compressed-tensors) or gptq "
        "(vLLM; transformers with optimum+gptqmodel or auto-round).",
    )
    group_size: int = Field(default=128, description="Quantization group size; -1 = per channel.")
    iterations: int = Field(
        default=200, ge=1, le=10000, description="AutoRound tuning steps per block (gptq)."
    )
    calibration_samples: int = Field(
        default=128, ge=1, le=4096, description="Calibration rows (gptq), cut from the train split."
    )
    calibration_seq_len: int = Field(
        default=2048, ge=16, le=8192, description="Tokens per calibration row (gptq)."
    )
    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="Directory name of the variant (default: int8, int4, gptq-int4, + -g<groupSize> when not "
        "128, + -gptq-format for format gptq).",
    )
    cel_rules: ClassVar = [
        cel(
            "self.groupSize == -1 || (self.groupSize >= 32 && self.groupSize <= 1024)",
            "groupSize must be -1 (per channel) or between 32 and 1024",
            ".groupSize",
        ),
        cel(
            "!has(self.bits) || self.method == 'gptq'",
            "bits is only for method gptq (int8 and int4 imply theirs)",
            ".bits",
        ),
    ]

    @model_validator(mode="after")
    def _group(self) -> QuantizeSpec:
        if self.group_size != -1 and not 32 <= self.group_size <= 1024:
            raise ValueError("quantize.groupSize must be -1 (per channel) or between 32 and 1024")
        if self.bits is not None and self.method != "gptq":
            raise ValueError("quantize.bits is only for method gptq (int8 and int4 imply theirs)")
        return self

    def variant_name(self) -> str:
        if self.name:
            return self.name
        base = f"gptq-int{self.bits or 4}" if self.method == "gptq" else self.method
        group = {128: "", -1: "-channel"}.get(self.group_size, f"-g{self.group_size}")
        return base + group + ("-gptq-format" if self.format == "gptq" else "")


class VerifySpec(SpecModel):
    enabled: bool = Field(default=True, description="Compare each quantized model with the merged one.")
    max_perplexity_increase: float = Field(
        default=0.05, ge=0, description="Warn above this relative perplexity increase (0.05 = +5%)."
    )
    max_term_accuracy_drop: float = Field(
        default=0.05, ge=0, le=1, description="Warn above this absolute drop in term accuracy."
    )
    min_top1_agreement: float = Field(
        default=0.90,
        ge=0,
        le=1,
        description="Warn below this top-1 token agreement with the merged model (teacher-forced).",
    )
    samples: int = Field(default=32, ge=1, description="Test samples used for verification.")


class ModelExportSpec(SpecModel):
    fine_tune_job_ref: DatasetRef | None = Field(
        default=None, description="FineTuneJob whose adapter is exported (waits for it)."
    )
    adapter: Volume | None = Field(default=None, description="Or: an adapter directory.")
    base_model: ModelSource | None = Field(default=None, description="Base model (default: the job's).")
    merge: bool = Field(default=True, description="Merge the LoRA adapter into the base weights.")
    quantize: list[QuantizeSpec] = Field(default_factory=list, description="Quantized variants to produce.")
    verify: VerifySpec = Field(
        default_factory=VerifySpec, description="Verification against the merged model."
    )
    model_card: bool = Field(default=True, description="Write README.md model card with usage.")
    output: Volume = Field(description="Export directory.")
    pod: PodOptions = Field(default_factory=PodOptions, description="Pod options on a cluster.")
    resources: ResourceList = Field(
        default={"limits": {"nvidia.com/gpu": 1}},
        description="ResourceRequirements of the export pod.",
    )
    cel_rules: ClassVar = [
        cel("has(self.fineTuneJobRef) != has(self.adapter)", "set exactly one of fineTuneJobRef or adapter"),
        cel(
            "has(self.fineTuneJobRef) || has(self.baseModel)",
            "baseModel is required when exporting a bare adapter",
            ".baseModel",
        ),
        cel(
            "self.merge || size(self.quantize) == 0",
            "quantizing needs merge: true (quantization works on the merged weights)",
            ".merge",
        ),
    ]

    @model_validator(mode="after")
    def _combos(self) -> ModelExportSpec:
        if (self.fine_tune_job_ref is None) == (self.adapter is None):
            raise ValueError("set exactly one of fineTuneJobRef or adapter")
        if self.fine_tune_job_ref is None and self.base_model is None:
            raise ValueError("baseModel is required when exporting a bare adapter")
        if self.quantize and not self.merge:
            raise ValueError("quantizing needs merge: true (quantization works on the merged weights)")
        names = [q.variant_name() for q in self.quantize]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"quantize: two variants named {', '.join(dup)}; give one a name")
        return self


class ExportArtifact(StatusModel):
    name: str = Field(description="merged, int8, gptq-int4, ...")
    path: str = Field(description="Directory of the artifact.")
    size_bytes: int | None = Field(default=None, description="Size on disk.")
    verified: bool | None = Field(default=None, description="Passed verification.")
    perplexity: float | None = Field(default=None, description="Perplexity on the verification samples.")
    term_accuracy: float | None = Field(
        default=None, description="Term accuracy on the verification samples."
    )
    warnings: list[str] = Field(default_factory=list, description="Degradation warnings.")


class ModelExportStatus(CommonStatus):
    artifacts: list[ExportArtifact] = Field(default_factory=list, description="Exported models.")


# ---------------------------------------------------------------------------------------------------------
# The resources


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None


# What an edit of a spec field means, per kind (`kubectl explain <kind>.spec.<field>` says it: crdgen appends the
# sentence to each top-level field's description; nested fields follow their top-level field). The operator
# enforces it: numNodes by a CEL transition rule; a FineTuneJob's per-attempt ConfigMap is written from the
# generation that starts the attempt; DatasetBuild/ModelExport pods are one per spec version (content-hashed).
EDIT_IMMUTABLE = "Immutable: delete and recreate the resource to change it."
EDIT_NEXT_ATTEMPT = (
    "Edits apply at the next attempt: a running gang keeps the spec it started with; the next gang (after a "
    "failure, a restart or a resume) is built from the edited spec."
)
EDIT_IMMEDIATE = "Edits apply immediately: the operator reads it on every reconcile."
EDIT_RERUN = "An edit re-runs the stage: the operator starts a new pod for the new spec generation."


def edit_rule(kind_name: str, field: str) -> str:
    """The edit sentence for a top-level spec field (its camelCase name)."""
    if kind_name != "FineTuneJob":
        return EDIT_RERUN
    if field == "numNodes":
        return EDIT_IMMUTABLE
    if field == "runPolicy":
        return EDIT_IMMEDIATE + " (schedulingPolicy: at the next gang)."
    return EDIT_NEXT_ATTEMPT


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # per-kind metadata used by crdgen and the operator
    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_name: ClassVar[str]
    spec_model: ClassVar[type[SpecModel]]
    status_model: ClassVar[type[StatusModel]]
    printer_columns: ClassVar[list[dict[str, Any]]]
    description: ClassVar[str]

    api_version: Literal["thinktune.io/v1alpha1"] = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta


class DatasetBuild(Resource):
    kind_name: ClassVar = "DatasetBuild"
    plural: ClassVar = "datasetbuilds"
    short_name: ClassVar = "dsb"
    spec_model: ClassVar = DatasetBuildSpec
    status_model: ClassVar = DatasetBuildStatus
    description: ClassVar = (
        "Turns a directory of Chinese markdown into validated LLaMA Factory training data "
        "with Qwen3 <think> reasoning and balanced train/val/test splits."
    )
    printer_columns: ClassVar = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Samples", "type": "integer", "jsonPath": ".status.counts.samples"},
        {"name": "Train", "type": "integer", "jsonPath": ".status.counts.train", "priority": 1},
        {"name": "Rejects", "type": "integer", "jsonPath": ".status.counts.rejects"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    kind: Literal["DatasetBuild"]
    spec: DatasetBuildSpec
    status: DatasetBuildStatus | None = None


class FineTuneJob(Resource):
    kind_name: ClassVar = "FineTuneJob"
    plural: ClassVar = "finetunejobs"
    short_name: ClassVar = "ftj"
    spec_model: ClassVar = FineTuneJobSpec
    status_model: ClassVar = FineTuneJobStatus
    description: ClassVar = (
        "Fine-tunes a causal LM (default Qwen3-4B-Thinking-2507) with LLaMA Factory on "
        "one or more GPU nodes, restarting the gang from the last checkpoint on GPU failure."
    )
    printer_columns: ClassVar = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
        {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
        {"name": "ETA(s)", "type": "integer", "jsonPath": ".status.progress.etaSeconds", "priority": 1},
        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts.infrastructure"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    kind: Literal["FineTuneJob"]
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None


class ModelExport(Resource):
    kind_name: ClassVar = "ModelExport"
    plural: ClassVar = "modelexports"
    short_name: ClassVar = "mex"
    spec_model: ClassVar = ModelExportSpec
    status_model: ClassVar = ModelExportStatus
    description: ClassVar = (
        "Merges a LoRA adapter, produces quantized variants, verifies them against the "
        "merged model and writes a model card."
    )
    printer_columns: ClassVar = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    kind: Literal["ModelExport"]
    spec: ModelExportSpec
    status: ModelExportStatus | None = None


KINDS: dict[str, type[Resource]] = {k.kind_name: k for k in (DatasetBuild, FineTuneJob, ModelExport)}
AnyResource = DatasetBuild | FineTuneJob | ModelExport
