"""Pure builders: FineTuneJob/DatasetBuild/ModelExport child objects (no cluster)."""

from __future__ import annotations

import yaml
from thinktune import contract
from thinktune.spec import FineTuneJob, Volume
from thinktune_operator import names as N
from thinktune_operator.builders import common as C
from thinktune_operator.builders import datasetbuild as DB
from thinktune_operator.builders import finetunejob as B
from thinktune_operator.builders import modelexport as ME
from thinktune_operator.config import OperatorConfig

CFG = OperatorConfig()


def ftj(**spec_over):
    spec = {
        "datasetRef": {"name": "crypto-ds"},
        "numNodes": 2,
        "resourcesPerNode": {"limits": {"nvidia.com/gpu": 8, "cpu": "16"}},
        "output": {"path": "runs/qwen-crypto"},
        "pod": {
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"pool": "gpu"},
        },
    }
    spec.update(spec_over)
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "qwen-crypto", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": spec,
    }


DS = Volume(path="datasets/crypto", pvc=None)


def test_worker_pods_names_env_and_gang():
    body = ftj()
    spec = B.parse_spec(body)
    pods = B.worker_pods(body, spec, CFG, attempt=0, avoid=[], dataset=DS)
    assert [p["metadata"]["name"] for p in pods] == ["qwen-crypto-a0-w0", "qwen-crypto-a0-w1"]
    for rank, p in enumerate(pods):
        s = p["spec"]
        assert s["restartPolicy"] == "Never"
        assert s["hostname"] == p["metadata"]["name"] and s["subdomain"] == "qwen-crypto"
        c = s["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["NNODES"] == "2" and env["NODE_RANK"] == str(rank)
        assert env["NPROC_PER_NODE"] == "8"  # auto = GPUs per pod
        assert env["MASTER_ADDR"] == "qwen-crypto-a0-w0.qwen-crypto"
        assert env["MASTER_PORT"] == str(N.MASTER_PORT)
        assert env["FORCE_TORCHRUN"] == "1"
        # only env the workload reads (plus HOME/HF_HOME for the libraries): no THINKTUNE_JOB/RANK/RESUME/...
        assert set(env) - set(contract.POD_ENV) == {"HOME", "HF_HOME"}
        assert env[contract.ENV_METRICS_PORT] == "9400"
        assert c["command"] == ["thinktune", "train", "-f", "/etc/thinktune/job.yaml"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == 9400 and ports["metrics-r7"] == 9407 and ports["rdzv"] == 29500
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert s["securityContext"]["runAsNonRoot"] is True
        assert s["nodeSelector"] == {"pool": "gpu"}
        assert s["tolerations"][0]["key"] == "kwok.x-k8s.io/node"
        assert p["metadata"]["ownerReferences"][0] == {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "name": "qwen-crypto",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        lab = p["metadata"]["labels"]
        assert lab[N.L_JOB] == "qwen-crypto" and lab[N.L_ATTEMPT] == "0" and lab[N.L_RANK] == str(rank)
        assert lab[N.L_MANAGED_BY] == N.MANAGED_BY
        # one worker per node
        anti = s["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert anti["topologyKey"] == "kubernetes.io/hostname"
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in s["volumes"] if "persistentVolumeClaim" in v
        ]
        assert claims == ["thinktune-workspace"]
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in s["volumes"])


def test_restart_attempt_resumes_and_avoids_failed_nodes():
    body = ftj(
        pod={
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]},
                            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h200"]}]},
                        ]
                    }
                }
            }
        }
    )
    spec = B.parse_spec(body)
    p = B.worker_pod(body, spec, CFG, attempt=3, rank=1, avoid=["node-bad", "node-worse"], dataset=DS)
    assert p["metadata"]["name"] == "qwen-crypto-a3-w1"
    env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == "qwen-crypto-a3-w0.qwen-crypto"
    assert p["metadata"]["annotations"][N.A_RESUME] == "true"
    terms = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert len(terms) == 2  # user terms kept (ORed) and each one excludes the failed node
    for t in terms:
        # the apiserver allows exactly one value per metadata.name requirement
        assert t["matchFields"] == [
            {"key": "metadata.name", "operator": "NotIn", "values": ["node-bad"]},
            {"key": "metadata.name", "operator": "NotIn", "values": ["node-worse"]},
        ]
        assert t["matchExpressions"]
    # the user's affinity object is not mutated
    assert (
        "matchFields"
        not in spec.pod.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][0]
    )


def test_configmap_is_a_valid_resolved_cr():
    body = ftj()
    spec = B.parse_spec(body)
    cm = B.job_configmap(body, B.resolved_job(body, spec, CFG, DS), 0)
    doc = yaml.safe_load(cm["data"]["job.yaml"])
    cr = FineTuneJob.model_validate(doc)  # the pod parses it with the same models
    assert cr.spec.dataset.path == "/workspace/thinktune-workspace/datasets/crypto"
    assert cr.spec.dataset_ref is None
    assert cr.spec.output.path == "/workspace/thinktune-workspace/runs/qwen-crypto"
    assert cm["metadata"]["name"] == "qwen-crypto-a0-job"
    assert cm["metadata"]["annotations"][N.A_GENERATION] == "1"


def test_spec_edits_reach_the_next_attempt():
    """Each attempt reads its own ConfigMap, written from the spec of the generation that started it."""
    body = ftj()
    first = B.job_configmap(body, B.resolved_job(body, B.parse_spec(body), CFG, DS), 0)
    edited = ftj(training={"learningRate": 0.0003})
    edited["metadata"]["generation"] = 2
    second = B.job_configmap(edited, B.resolved_job(edited, B.parse_spec(edited), CFG, DS), 1)
    assert first["metadata"]["name"] != second["metadata"]["name"]
    lr = yaml.safe_load(second["data"]["job.yaml"])["spec"]["training"]["learningRate"]
    assert lr == 0.0003
    pod = B.worker_pod(edited, B.parse_spec(edited), CFG, 1, 0, [], DS)
    cm_vol = next(v for v in pod["spec"]["volumes"] if v["name"] == "cr")
    assert cm_vol["configMap"]["name"] == second["metadata"]["name"]


def test_sanitised_names_never_collide():
    """`x.y` and `x-y` are different CRs: only the one whose name needed no change keeps it."""
    assert N.dns_label("x-y") == "x-y"
    assert N.dns_label("x.y") != N.dns_label("x-y") and N.dns_label("x.y").startswith("x-y-")
    assert N.worker_pod_name("x.y", 0, 0) != N.worker_pod_name("x-y", 0, 0)
    assert N.parse_worker_name(N.worker_pod_name("x.y", 3, 1)) == (3, 1)
    assert N.dns_label("x.y") == N.dns_label("x.y")  # deterministic: a restarted operator finds its children
    assert N.dns_label("1abc") != N.dns_label("t-1abc")


def test_datasetbuild_configmap_follows_the_spec():
    base = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "DatasetBuild",
        "metadata": {"name": "ds", "namespace": "ml", "uid": "u"},
        "spec": {"source": {"path": "corpus"}, "output": {"path": "out"}},
    }
    cm1, pod1, _ = DB.children(base, CFG)
    edited = {**base, "spec": {**base["spec"], "split": {"seed": 7}}}
    cm2, pod2, _ = DB.children(edited, CFG)
    assert cm1["metadata"]["name"] != cm2["metadata"]["name"]
    assert yaml.safe_load(cm2["data"][N.CR_FILE])["spec"]["split"]["seed"] == 7
    assert (
        next(v for v in pod2["spec"]["volumes"] if v["name"] == "cr")["configMap"]["name"]
        == (cm2["metadata"]["name"])
    )


def test_headless_service():
    svc = B.rdzv_service(ftj())
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {N.L_JOB: "qwen-crypto"}


def test_kueue_and_podgroups():
    rp = {
        "schedulingPolicy": {
            "gangScheduler": "coscheduling",
            "queue": "team-a",
            "scheduleTimeoutSeconds": 120,
        }
    }
    body = ftj(runPolicy=rp)
    spec = B.parse_spec(body)
    p = B.worker_pod(body, spec, CFG, 1, 0, [], DS)
    assert p["metadata"]["labels"][N.L_KUEUE_QUEUE] == "team-a"
    assert p["metadata"]["labels"][N.L_KUEUE_POD_GROUP] == "qwen-crypto-a1"
    assert p["metadata"]["annotations"][N.A_KUEUE_TOTAL] == "2"
    assert p["metadata"]["labels"][N.L_COSCHED_POD_GROUP] == "qwen-crypto-a1"
    pg = B.pod_group(body, spec, 1)
    assert pg["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert pg["spec"] == {"minMember": 2, "scheduleTimeoutSeconds": 120}
    body = ftj(runPolicy={"schedulingPolicy": {"gangScheduler": "volcano", "queue": "q"}})
    spec = B.parse_spec(body)
    pg = B.pod_group(body, spec, 0)
    assert pg["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert pg["spec"]["minMember"] == 2 and pg["spec"]["queue"] == "q"
    assert pg["spec"]["minResources"]["nvidia.com/gpu"] == "16"
    p = B.worker_pod(body, spec, CFG, 0, 0, [], DS)
    assert p["spec"]["schedulerName"] == "volcano"
    assert p["metadata"]["annotations"][N.A_VOLCANO_GROUP] == "qwen-crypto-a0"
    assert N.L_KUEUE_QUEUE not in p["metadata"]["labels"]
    assert B.pod_group(ftj(), B.parse_spec(ftj()), 0) is None


def test_single_node_no_torchrun_and_deadline():
    body = ftj(
        numNodes=1,
        resourcesPerNode={"limits": {"nvidia.com/gpu": 1}},
        runPolicy={"activeDeadlineSeconds": 60},
    )
    spec = B.parse_spec(body)
    p = B.worker_pod(body, spec, CFG, 0, 0, [], DS)
    env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
    assert "FORCE_TORCHRUN" not in env and env["NPROC_PER_NODE"] == "1"
    assert p["spec"]["activeDeadlineSeconds"] == 60


def test_long_names_are_valid_dns_labels():
    long = "a" * 70
    n = N.worker_pod_name(long, 12, 3)
    assert len(n) <= 63 and n.endswith("-a12-w3")
    assert N.worker_pod_name(long, 0, 0) != N.worker_pod_name("a" * 71, 0, 0)
    assert N.parse_worker_name(n) == (12, 3)
    assert N.rdzv_service_name("9lives")[0].isalpha()
    assert len(N.label_value("x" * 100)) <= 63


def dsb():
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "DatasetBuild",
        "metadata": {"name": "crypto-ds", "namespace": "ml", "uid": "u-2", "generation": 1},
        "spec": {
            "source": {"path": "corpus"},
            "output": {"path": "datasets/crypto", "pvc": "data"},
            "resources": {"requests": {"cpu": "2"}, "limits": {"nvidia.com/gpu": 1}},
        },
    }


def test_datasetbuild_pod_is_cpu_only_and_reads_the_cr():
    cm, pod, out = DB.children(dsb(), CFG)
    c = pod["spec"]["containers"][0]
    assert c["command"][:3] == ["thinktune", "dataset", "build"]
    assert "--input" in c["command"] and "/workspace/thinktune-workspace/corpus" in c["command"]
    assert out == "/workspace/data/datasets/crypto"
    assert "nvidia.com/gpu" not in str(c["resources"])
    assert pod["metadata"]["name"].startswith("crypto-ds-build-")
    claims = sorted(
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    )
    assert claims == ["data", "thinktune-workspace"]
    assert {"name": "THINKTUNE_TERMINATION_LOG", "value": "/dev/termination-log"} in c["env"]
    doc = yaml.safe_load(cm["data"]["cr.yaml"])
    assert doc["kind"] == "DatasetBuild" and doc["spec"]["output"]["path"] == out
    # a different spec is a different pod; the same spec the same pod
    other = dsb()
    other["spec"]["dedup"] = {"enabled": False}
    assert DB.pod_name(other) != DB.pod_name(dsb()) and DB.pod_name(dsb()) == DB.pod_name(dsb())


def mex(quant):
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "qc-export", "namespace": "ml", "uid": "u-3", "generation": 1},
        "spec": {
            "fineTuneJobRef": {"name": "qwen-crypto"},
            "quantize": quant,
            "output": {"path": "exports/qc"},
        },
    }


def test_modelexport_gpu_only_when_needed():
    _, pod, _ = ME.children(
        mex([{"method": "gptq", "bits": 4}]),
        CFG,
        Volume(path="runs/qc"),
        {"nameOrPath": "models/qwen", "pvc": "models"},
    )
    c = pod["spec"]["containers"][0]
    assert C.gpu_count(c["resources"]) == 1
    assert c["command"] == ["thinktune", "export", "-f", "/etc/thinktune/cr.yaml"]
    cm, pod, _ = ME.children(mex([{"method": "int8"}]), CFG, Volume(path="runs/qc"), {"nameOrPath": "Qwen/x"})
    assert C.gpu_count(pod["spec"]["containers"][0]["resources"]) == 0
    doc = yaml.safe_load(cm["data"]["cr.yaml"])
    assert doc["spec"]["adapter"]["path"] == "/workspace/thinktune-workspace/runs/qc"
    assert "fineTuneJobRef" not in doc["spec"] and doc["spec"]["baseModel"]["nameOrPath"] == "Qwen/x"


def test_workspace_pvc():
    pvc = C.workspace_pvc("thinktune-workspace", "ml", "10Gi", storage_class="")
    assert pvc["spec"]["storageClassName"] == "" and pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
