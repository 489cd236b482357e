"""DatasetBuild children: a ConfigMap with the resolved CR and one CPU pod running `thinktune dataset build`.

The pod reports its counts as a contract.DatasetResult in its termination message, so the operator reads
results from the pod status (planners/single_pod.py): no exec, no PVC access.
"""

from __future__ import annotations

from typing import Any

from thinktune.spec import DatasetBuildSpec, parse_cluster

from .. import names as N
from ..config import OperatorConfig
from . import common
from .common import Mounts, cr_configmap, resolved_cr, single_pod, without_gpu

COMPONENT = "dataset-build"


def parse_spec(body: dict[str, Any]) -> DatasetBuildSpec:
    return parse_cluster(DatasetBuildSpec, body.get("spec") or {})  # in-cluster rules: paths inside the PVC


def pod_name(body: dict[str, Any]) -> str:
    # the spec hash is in the name: a changed spec gets a new build pod, the same spec never a second one
    return N.dns_label(body["metadata"]["name"], f"-build-{common.spec_hash(body)}")


def configmap_name(body: dict[str, Any], resolved: dict[str, Any]) -> str:
    """Content-hashed: a re-run after a spec edit (a new seed) reads the new spec, never the first one."""
    return N.dns_label(body["metadata"]["name"], f"-build-{common.content_hash(resolved)}")


def children(body: dict[str, Any], cfg: OperatorConfig) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(configmap, pod, in-pod output dir)."""
    spec = parse_spec(body)
    m = Mounts(cfg.workspace_pvc)
    src, out = m.path(spec.source), m.path(spec.output)
    s = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    s["source"], s["output"] = {"path": src}, {"path": out}
    resolved = resolved_cr(body, s)
    cm_name = configmap_name(body, resolved)
    cm = cr_configmap(body, cm_name, COMPONENT, resolved)
    container = {
        "name": "dataset-build",
        "command": [
            "thinktune",
            "dataset",
            "build",
            "-f",
            f"{N.CONFIG_MOUNT}/{N.CR_FILE}",
            "--input",
            src,
            "--output",
            out,
        ],
        "resources": without_gpu(spec.resources, cfg.gpu_resource),  # CPU work: never hold a GPU
    }
    pod = single_pod(body, pod_name(body), COMPONENT, spec.pod, container, m, cm_name, cfg)
    return cm, pod, out
