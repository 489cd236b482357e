"""ModelExport children: ConfigMap with the resolved CR and one pod running `thinktune export`.

The pod gets a GPU only when a requested variant is calibrated (gptq: AutoRound tunes every block on calibration
text); merge and the round-to-nearest int8/int4 run on CPU.
"""

from __future__ import annotations

from typing import Any

from thinktune.spec import ModelExportSpec, Volume, parse_cluster

from .. import names as N
from ..config import OperatorConfig
from . import common
from .common import Mounts, cr_configmap, gpu_count, resolved_cr, single_pod, without_gpu

COMPONENT = "export"
GPU_METHODS = {"gptq"}


def parse_spec(body: dict[str, Any]) -> ModelExportSpec:
    return parse_cluster(ModelExportSpec, body.get("spec") or {})  # in-cluster rules: paths inside the PVC


def needs_gpu(spec: ModelExportSpec) -> bool:
    return any(q.method in GPU_METHODS for q in spec.quantize)


def pod_name(body: dict[str, Any]) -> str:
    return N.dns_label(body["metadata"]["name"], f"-export-{common.spec_hash(body)}")


def configmap_name(body: dict[str, Any], resolved: dict[str, Any]) -> str:
    """Content-hashed: a changed spec (or a changed FineTuneJob output) gets a new ConfigMap, never a stale one."""
    return N.dns_label(body["metadata"]["name"], f"-export-{common.content_hash(resolved)}")


def resources_for(spec: ModelExportSpec, cfg: OperatorConfig) -> dict[str, Any]:
    if needs_gpu(spec):
        r = dict(spec.resources)
        if not gpu_count(r, cfg.gpu_resource):
            r = {**r, "limits": {**(r.get("limits") or {}), cfg.gpu_resource: 1}}
        return r
    return without_gpu(spec.resources, cfg.gpu_resource)


def children(
    body: dict[str, Any],
    cfg: OperatorConfig,
    adapter: Volume | None = None,
    base_model: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """`adapter`/`base_model` come from the referenced FineTuneJob when fineTuneJobRef is used."""
    spec = parse_spec(body)
    m = Mounts(cfg.workspace_pvc)
    out = m.path(spec.output)
    s = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    s["output"] = {"path": out}
    ad = spec.adapter or adapter
    if ad is not None:
        s["adapter"] = {"path": m.path(ad)}
        s.pop("fineTuneJobRef", None)
    bm = s.get("baseModel") or base_model
    if bm is not None:
        bm = dict(bm)
        if bm.get("pvc") or bm.get("makeTiny"):  # the FineTuneJob's tiny model lives on the volume too
            bm["nameOrPath"] = (
                f"{N.WORKSPACE_ROOT}/{m.claim_of(pvc=bm.get('pvc'))}/{bm['nameOrPath'].strip('/')}"
            )
            bm.pop("pvc", None)
        s["baseModel"] = bm
    resolved = resolved_cr(body, s)
    cm_name = configmap_name(body, resolved)
    cm = cr_configmap(body, cm_name, COMPONENT, resolved)
    container = {
        "name": "export",
        "command": ["thinktune", "export", "-f", f"{N.CONFIG_MOUNT}/{N.CR_FILE}"],
        "resources": resources_for(spec, cfg),
    }
    pod = single_pod(body, pod_name(body), COMPONENT, spec.pod, container, m, cm_name, cfg)
    return cm, pod, out
