"""The CRDs from crds/ on a real kube-apiserver: schema and CEL rules reject bad CRs (server-side dry run,
strict field validation), the examples are accepted."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]

FTJ = {
    "apiVersion": "thinktune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "v", "namespace": "default"},
    "spec": {"dataset": {"path": "d"}, "output": {"path": "o"}},
}
DSB = {
    "apiVersion": "thinktune.io/v1alpha1",
    "kind": "DatasetBuild",
    "metadata": {"name": "v", "namespace": "default"},
    "spec": {"source": {"path": "corpus"}, "output": {"path": "o"}},
}
MEX = {
    "apiVersion": "thinktune.io/v1alpha1",
    "kind": "ModelExport",
    "metadata": {"name": "v", "namespace": "default"},
    "spec": {"fineTuneJobRef": {"name": "j"}, "output": {"path": "o"}},
}


def with_(base: dict, path: str, value, delete: str | None = None) -> dict:
    doc = copy.deepcopy(base)
    cur = doc["spec"]
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    if delete:
        doc["spec"].pop(delete)
    return doc


BAD = [
    # (id, document, substring expected in the apiserver's error)
    ("ftj-both-dataset-sources", with_(FTJ, "datasetRef", {"name": "x"}), "exactly one of datasetRef"),
    ("ftj-no-dataset-source", with_(FTJ, "numNodes", 1, delete="dataset"), "exactly one of datasetRef"),
    ("ftj-numNodes-0", with_(FTJ, "numNodes", 0), "numNodes"),
    ("ftj-numNodes-too-many", with_(FTJ, "numNodes", 5000), "numNodes"),
    ("ftj-thinking-off-qwen3", with_(FTJ, "enableThinking", False), "enableThinking must stay true"),
    (
        "ftj-single-strategy-multinode",
        with_(with_(FTJ, "numNodes", 2), "finetuning.strategy", "single"),
        "strategy single",
    ),
    ("ftj-unknown-field", with_(FTJ, "numNode", 2), "numNode"),
    ("ftj-lr-too-big", with_(FTJ, "training.learningRate", 2.0), "learningRate"),
    (
        "ftj-micro-gt-global",
        with_(with_(FTJ, "training.microBatchSize", 64), "training.globalBatchSize", 8),
        "microBatchSize must not exceed",
    ),
    ("ftj-method-enum", with_(FTJ, "finetuning.method", "dpo"), "method"),
    (
        "ftj-quantbit-without-qlora",
        with_(FTJ, "finetuning.quantizationBit", 4),
        "only valid with method qlora",
    ),
    (
        "ftj-qlora-zero3",
        with_(with_(FTJ, "finetuning.method", "qlora"), "finetuning.strategy", "zero3"),
        "qlora does not work",
    ),
    ("ftj-megatron-lora", with_(FTJ, "finetuning.strategy", "megatron"), "Megatron"),
    ("ftj-output-dotdot", with_(FTJ, "output.path", "../../etc"), "must not contain '..'"),
    ("ftj-backoff-negative", with_(FTJ, "runPolicy.backoffLimit", -1), "backoffLimit"),
    ("ftj-cleanpod-enum", with_(FTJ, "runPolicy.cleanPodPolicy", "Some"), "cleanPodPolicy"),
    ("ftj-metrics-port-privileged", with_(FTJ, "monitoring.metricsPort", 80), "metricsPort"),
    (
        "ftj-gang-scheduler-enum",
        with_(FTJ, "runPolicy.schedulingPolicy.gangScheduler", "kube-batch"),
        "gangScheduler",
    ),
    ("ftj-missing-output", with_(FTJ, "numNodes", 1, delete="output"), "output"),
    ("ftj-numproc-string", with_(FTJ, "numProcPerNode", "many"), "numProcPerNode"),
    ("dsb-split-sum", with_(DSB, "split", {"train": 0.8, "val": 0.2, "test": 0.2}), "must sum to 1"),
    ("dsb-teacher-missing", with_(DSB, "thinking.generate", "model"), "teacherModel is required"),
    ("dsb-dataset-name-pattern", with_(DSB, "datasetName", "Bad Name"), "datasetName"),
    ("dsb-cutoff-too-small", with_(DSB, "validation.cutoffLen", 10), "cutoffLen"),
    ("dsb-opencc-enum", with_(DSB, "chinese.opencc", "s2t"), "opencc"),
    ("dsb-source-dotdot", with_(DSB, "source.path", "a/../../b"), "must not contain '..'"),
    ("mex-both-sources", with_(MEX, "adapter", {"path": "a"}), "exactly one of fineTuneJobRef or adapter"),
    (
        "mex-bare-adapter-no-base",
        with_(with_(MEX, "adapter", {"path": "a"}), "merge", True, delete="fineTuneJobRef"),
        "baseModel is required",
    ),
    (
        "mex-quantize-without-merge",
        with_(with_(MEX, "merge", False), "quantize", [{"method": "rtn", "bits": 8}]),
        "quantizing needs merge",
    ),
    ("mex-bits-3", with_(MEX, "quantize", [{"method": "rtn", "bits": 3}]), "bits"),
    ("mex-group-size", with_(MEX, "quantize", [{"method": "gptq", "bits": 4, "groupSize": 16}]), "groupSize"),
    ("mex-method-enum", with_(MEX, "quantize", [{"method": "awq", "bits": 4}]), "method"),
]


@pytest.mark.parametrize("doc,needle", [(d, n) for _, d, n in BAD], ids=[i for i, _, _ in BAD])
def test_bad_cr_rejected_by_apiserver(control_plane, doc, needle):
    r = control_plane.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert r.returncode != 0, f"apiserver accepted an invalid {doc['kind']}: {doc['spec']}"
    assert needle in r.stderr, r.stderr


@pytest.mark.parametrize("doc", [FTJ, DSB, MEX], ids=["ftj", "dsb", "mex"])
def test_minimal_crs_accepted(control_plane, doc):
    r = control_plane.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert r.returncode == 0, r.stderr


def test_examples_accepted(control_plane):
    for f in sorted((ROOT / "examples" / "crypto").glob("*.yaml")):
        r = control_plane.kubectl("create", "--dry-run=server", "-n", "default", "-f", str(f), check=False)
        assert r.returncode == 0, f"{f.name}: {r.stderr}"


def test_status_subresource_and_printer_columns(control_plane):
    for plural in ("datasetbuilds", "finetunejobs", "modelexports"):
        crd = yaml.safe_load(
            control_plane.kubectl("get", "crd", f"{plural}.thinktune.io", "-o", "yaml").stdout
        )
        v = crd["spec"]["versions"][0]
        assert v["subresources"] == {"status": {}}
        assert v["additionalPrinterColumns"][0]["name"] == "Phase"
