"""The operator on the real control plane (kwok GPU nodes): gang scheduling with torchrun env, GPU-failure
detection by every signal with gang recreation on healthy nodes, waiting for capacity, budgets, restart safety,
deletion, suspend/resume, and the DatasetBuild -> FineTuneJob -> ModelExport chain.

Each test gets its own namespace and its own pool of kwok GPU nodes (selected by nodeSelector), so failure
injection in one test never touches another. The operator is a real `kopf run` subprocess.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from thinktune import contract
from thinktune.spec import DatasetCounts, ExportArtifact
from thinktune_sandbox.testing import ftj, wait_for

pytestmark = pytest.mark.cluster

NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
POD_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
POD_FAIL_EXIT = "pod-container-running-failed.stage.kwok.x-k8s.io/exit-code"
POD_FAIL_DELAY = "pod-container-running-failed.stage.kwok.x-k8s.io/delay"
GPU_EXIT = str(contract.EXIT_GPU_FAILURE)  # the exit code kwok fakes for a GPU failure
# "within seconds": failure injected -> replacement gang Running
REPLACEMENT_BUDGET_S = 20


@pytest.fixture
def env(cluster, op, request):
    ns = f"t-{request.node.name.replace('_', '-')[5:30].strip('-')}-{uuid.uuid4().hex[:4]}".lower()
    cluster.namespace(ns)
    yield ns
    cluster.kubectl("delete", "ns", ns, "--wait=false", check=False)
    cluster.delete_pool(ns)


def status(cluster, ns, name, kind="finetunejob"):
    return (cluster.get(kind, name, ns) or {}).get("status") or {}


def cond(st, t):
    return next((c for c in st.get("conditions", []) if c["type"] == t), {})


def running_pods(cluster, ns, job, attempt):
    pods = [
        p
        for p in cluster.worker_pods(ns, job)
        if p["metadata"]["labels"]["thinktune.io/attempt"] == str(attempt)
    ]
    return pods if pods and all(p["status"].get("phase") == "Running" for p in pods) else []


def env_of(pod):
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def resumes(pod) -> bool:
    """A worker of attempt > 0: LLaMA Factory resumes from the last checkpoint in the (unchanged) output dir."""
    return pod["metadata"]["annotations"]["thinktune.io/resume-from-checkpoint"] == "true"


def reasons(cluster, ns, name):
    return [e["reason"] for e in cluster.events(ns, name)]


def start_gang(cluster, ns, name, nodes, **kw):
    cluster.create(ftj(name, ns, ns, nodes=nodes, **kw))
    return wait_for(
        f"{name} gang running",
        lambda: len(running_pods(cluster, ns, name, 0)) == nodes and running_pods(cluster, ns, name, 0),
        60,
    )


def test_gang_on_gpu_nodes_with_torchrun_env(cluster, env, op):
    ns = env
    pool = cluster.gpu_pool(ns, 2)
    pods = start_gang(cluster, ns, "gang", 2)
    pods = sorted(pods, key=lambda p: p["metadata"]["name"])
    assert [p["metadata"]["name"] for p in pods] == ["gang-a0-w0", "gang-a0-w1"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(pool)  # one worker per GPU node
    for rank, p in enumerate(pods):
        e = env_of(p)
        assert e["NNODES"] == "2" and e["NODE_RANK"] == str(rank) and e["NPROC_PER_NODE"] == "8"
        assert e["MASTER_ADDR"] == "gang-a0-w0.gang" and e["MASTER_PORT"] == "29500"
        assert not resumes(p) and set(e) - set(contract.POD_ENV) == {
            "HOME",
            "HF_HOME",
        }  # only what the pod reads
        assert p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert p["spec"]["restartPolicy"] == "Never"
        assert p["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    svc = cluster.get("service", "gang", ns)
    assert svc["spec"]["clusterIP"] == "None"
    assert cluster.get("configmap", "gang-a0-job", ns)["data"]["job.yaml"]
    st = wait_for(
        "status Running", lambda: (s := status(cluster, ns, "gang")).get("phase") == "Running" and s, 20
    )
    assert cond(st, "Running")["status"] == "True" and cond(st, "Created")["status"] == "True"
    assert st["observedGeneration"] == 1 and st["attempt"] == 0
    assert {"GangCreated", "Running"} <= set(reasons(cluster, ns, "gang"))
    # progress: the rank-0 pod reports (annotation source: kwok pods run no trainer process)
    prog = {"step": 120, "totalSteps": 500, "loss": 1.25, "tokensPerSecond": 5000.0, "etaSeconds": 1800}
    cluster.kubectl("annotate", "pod", "gang-a0-w0", "-n", ns, f"thinktune.io/progress={json.dumps(prog)}")
    st = wait_for(
        "progress in status",
        lambda: (s := status(cluster, ns, "gang")).get("progress", {}).get("step") == 120 and s,
        20,
    )
    assert st["progress"]["summary"] == "120/500 (24%)" and st["progress"]["loss"] == 1.25
    # the trainer's anomaly counters become Warning Events, one per kind whose count grew
    prog["anomalies"] = {"loss_spike": 1}
    cluster.kubectl(
        "annotate", "--overwrite", "pod", "gang-a0-w0", "-n", ns, f"thinktune.io/progress={json.dumps(prog)}"
    )
    wait_for("TrainingAnomaly event", lambda: "TrainingAnomaly" in reasons(cluster, ns, "gang"), 20)
    st = wait_for(
        "anomalies in status",
        lambda: (s := status(cluster, ns, "gang")).get("progress", {}).get("anomalies") and s,
        20,
    )
    assert st["progress"]["anomalies"] == {"loss_spike": 1}
    msgs = [e["message"] for e in cluster.events(ns, "gang") if e["reason"] == "TrainingAnomaly"]
    assert len(msgs) == 1 and "loss_spike" in msgs[0]
    # no finalizer: deleting a CR never waits for the operator
    assert not cluster.get("finetunejob", "gang", ns)["metadata"].get("finalizers")


def _assert_replaced(cluster, ns, name, bad_node, reason, nodes, t0):
    # the whole gang: the operator creates its pods one by one, so one Running pod of two is not yet the gang
    new = wait_for(
        "replacement gang",
        lambda: len(p := running_pods(cluster, ns, name, 1)) >= nodes and p,
        REPLACEMENT_BUDGET_S,
        0.1,
    )
    elapsed = time.monotonic() - t0
    assert len(new) == nodes
    assert bad_node not in {p["spec"]["nodeName"] for p in new}, "replacement landed on the failed node"
    for p in new:
        assert resumes(p) and p["metadata"]["annotations"]["thinktune.io/attempt"] == "1"
    assert not [
        p
        for p in cluster.worker_pods(ns, name)
        if p["metadata"]["labels"]["thinktune.io/attempt"] == "0" and p["status"].get("phase") == "Running"
    ], "old gang still running"
    st = wait_for(
        "status back to Running", lambda: (s := status(cluster, ns, name)).get("phase") == "Running" and s, 20
    )
    assert st["restarts"]["infrastructure"] == 1 and st["restarts"]["application"] == 0
    assert st["failedNodes"][0]["node"] == bad_node and st["failedNodes"][0]["reason"] == reason
    assert cond(st, "Restarting")["status"] == "False"
    assert "GPUFailure" in reasons(cluster, ns, name)
    return elapsed


def test_gpu_failure_exit_code_restarts_whole_gang(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 3)
    pods = start_gang(cluster, ns, "gpufail", 2)
    victim = next(p for p in pods if p["metadata"]["name"].endswith("-w1"))
    bad = victim["spec"]["nodeName"]
    t0 = time.monotonic()
    cluster.kubectl(
        "annotate",
        "pod",
        victim["metadata"]["name"],
        "-n",
        ns,
        f"{POD_FAIL_EXIT}={GPU_EXIT}",
        f"{POD_FAIL_DELAY}=0",
    )
    cluster.kubectl("label", "pod", victim["metadata"]["name"], "-n", ns, f"{POD_FAIL_LABEL}=true")
    elapsed = _assert_replaced(cluster, ns, "gpufail", bad, "GPUFailure", 2, t0)
    print(f"GPU exit code -> replacement gang running in {elapsed:.2f}s")


def test_node_not_ready_moves_gang(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 2)
    (pod,) = start_gang(cluster, ns, "nodefail", 1)
    bad = pod["spec"]["nodeName"]
    t0 = time.monotonic()
    cluster.kubectl("annotate", "node", bad, "node-not-ready.stage.kwok.x-k8s.io/delay=0")
    cluster.kubectl("label", "node", bad, f"{NOT_READY_LABEL}=true")
    elapsed = _assert_replaced(cluster, ns, "nodefail", bad, "NodeNotReady", 1, t0)
    print(f"node NotReady -> replacement running in {elapsed:.2f}s")


def test_allocatable_drop_moves_gang(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 2)
    (pod,) = start_gang(cluster, ns, "allocdrop", 1)
    bad = pod["spec"]["nodeName"]
    t0 = time.monotonic()
    # the device plugin marks a GPU unhealthy: allocatable drops below capacity
    cluster.patch_status("node", bad, {"status": {"allocatable": {"nvidia.com/gpu": "7"}}})
    elapsed = _assert_replaced(cluster, ns, "allocdrop", bad, "GPUAllocatableReduced", 1, t0)
    print(f"allocatable drop -> replacement running in {elapsed:.2f}s")


def test_cordon_and_gpu_taint_are_infra_signals(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 3)
    (pod,) = start_gang(cluster, ns, "cordon", 1)
    bad = pod["spec"]["nodeName"]
    cluster.kubectl("cordon", bad)
    wait_for("attempt 1 running", lambda: running_pods(cluster, ns, "cordon", 1), REPLACEMENT_BUDGET_S)
    st = status(cluster, ns, "cordon")
    assert st["failedNodes"][0] == {**st["failedNodes"][0], "node": bad, "reason": "NodeCordoned"}
    (pod1,) = running_pods(cluster, ns, "cordon", 1)
    bad2 = pod1["spec"]["nodeName"]
    cluster.kubectl("taint", "node", bad2, "nvidia.com/gpu-unhealthy=xid79:NoSchedule")
    (pod2,) = wait_for(
        "attempt 2 running", lambda: running_pods(cluster, ns, "cordon", 2), REPLACEMENT_BUDGET_S
    )
    assert pod2["spec"]["nodeName"] not in (bad, bad2)
    st = status(cluster, ns, "cordon")
    assert [f["node"] for f in st["failedNodes"]] == [bad, bad2] and st["restarts"]["infrastructure"] == 2


def test_eviction_disruption_target_is_infra(cluster, env, op, control_plane):
    """Eviction API (what drain/preemption use): the apiserver sets DisruptionTarget on the pod."""
    from kubernetes import client, config

    ns = env
    cluster.gpu_pool(ns, 2)
    (pod,) = start_gang(cluster, ns, "evict", 1)
    api = client.CoreV1Api(config.new_client_from_config(str(control_plane.kubeconfig)))
    api.create_namespaced_pod_eviction(
        pod["metadata"]["name"],
        ns,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=pod["metadata"]["name"], namespace=ns)),
    )
    (new,) = wait_for(
        "replacement after eviction", lambda: running_pods(cluster, ns, "evict", 1), REPLACEMENT_BUDGET_S
    )
    st = wait_for(
        "Running again", lambda: (s := status(cluster, ns, "evict")).get("phase") == "Running" and s, 20
    )
    assert st["restarts"]["infrastructure"] == 1 and st["restarts"]["application"] == 0
    assert st["failedNodes"][0]["reason"] == "DisruptionTarget"
    assert resumes(new)


def test_no_healthy_capacity_waits_then_recovers(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 1)
    (pod,) = start_gang(cluster, ns, "waiter", 1)
    cluster.kubectl(
        "annotate",
        "pod",
        pod["metadata"]["name"],
        "-n",
        ns,
        f"{POD_FAIL_EXIT}={GPU_EXIT}",
        f"{POD_FAIL_DELAY}=0",
    )
    cluster.kubectl("label", "pod", pod["metadata"]["name"], "-n", ns, f"{POD_FAIL_LABEL}=true")
    st = wait_for(
        "Waiting/NoHealthyCapacity",
        lambda: (s := status(cluster, ns, "waiter")).get("phase") == "Waiting" and s,
        20,
    )
    w = cond(st, "Waiting")
    assert (
        w["status"] == "True"
        and w["reason"] == "NoHealthyCapacity"
        and pod["spec"]["nodeName"] in w["message"]
    )
    assert cond(st, "Failed") == {}
    assert "NoHealthyCapacity" in reasons(cluster, ns, "waiter")
    time.sleep(2)
    assert not running_pods(cluster, ns, "waiter", 1)
    # new capacity arrives: the job proceeds by itself
    doc = cluster.cp.gpu_node_manifest(f"{ns}-extra")
    doc["metadata"]["labels"]["thinktune.io/test-pool"] = ns
    doc["metadata"]["labels"].pop("thinktune.io/sandbox-node", None)
    cluster.apply(doc)
    (new,) = wait_for("gang on the new node", lambda: running_pods(cluster, ns, "waiter", 1), 30)
    assert new["spec"]["nodeName"] == f"{ns}-extra"
    st = wait_for("Running", lambda: (s := status(cluster, ns, "waiter")).get("phase") == "Running" and s, 20)
    assert cond(st, "Waiting")["status"] == "False"


def test_application_failure_uses_backoff_limit(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 2)
    (pod,) = start_gang(cluster, ns, "appfail", 1, runPolicy={"backoffLimit": 0})
    cluster.kubectl(
        "annotate", "pod", pod["metadata"]["name"], "-n", ns, f"{POD_FAIL_EXIT}=1", f"{POD_FAIL_DELAY}=0"
    )
    cluster.kubectl("label", "pod", pod["metadata"]["name"], "-n", ns, f"{POD_FAIL_LABEL}=true")
    st = wait_for("Failed", lambda: (s := status(cluster, ns, "appfail")).get("phase") == "Failed" and s, 20)
    assert cond(st, "Failed")["reason"] == "BackoffLimitExceeded"
    assert st["restarts"] == {"application": 1, "infrastructure": 0, "oom": 0} and st["failedNodes"] == []
    assert st["completionTime"]


def test_operator_killed_mid_reconcile_no_duplicates(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 4)  # 32 GPUs
    n = 24
    cluster.create(*[ftj(f"job-{i:02d}", ns, ns, nodes=1, gpus=1) for i in range(n)])
    time.sleep(0.7)
    op.kill()  # SIGKILL in the middle of creating children / patching status
    created_before = len(cluster.list("pods", ns))
    op.start()
    wait_for(
        "all jobs running",
        lambda: len([p for p in cluster.list("pods", ns) if p["status"].get("phase") == "Running"]) == n,
        90,
        0.5,
    )
    time.sleep(3)  # let any late duplicate show up
    pods = cluster.list("pods", ns)
    names = sorted(p["metadata"]["name"] for p in pods)
    assert names == sorted(f"job-{i:02d}-a0-w0" for i in range(n)), names
    for i in range(n):
        st = status(cluster, ns, f"job-{i:02d}")
        assert (
            st["attempt"] == 0
            and st["restarts"]["infrastructure"] == 0
            and st["restarts"]["application"] == 0
        )
    assert len(cluster.list("configmaps", ns, "app.kubernetes.io/managed-by=thinktune-operator")) == n
    assert len(cluster.list("services", ns, "app.kubernetes.io/managed-by=thinktune-operator")) == n
    print(f"{created_before} pods existed when the operator was killed")


def test_deletion_cleans_up(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 2)
    start_gang(cluster, ns, "gone", 2)
    cluster.kubectl("delete", "finetunejob", "gone", "-n", ns, "--wait=true", "--timeout=20s")
    wait_for(
        "children garbage-collected",
        lambda: (
            not cluster.worker_pods(ns, "gone")
            and cluster.get("service", "gone", ns) is None
            and cluster.get("configmap", "gone-a0-job", ns) is None
        ),
        45,
    )


def test_suspend_and_resume(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 2)
    start_gang(cluster, ns, "susp", 1)
    cluster.kubectl(
        "patch",
        "finetunejob",
        "susp",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"runPolicy":{"suspend":true}}}',
    )
    st = wait_for(
        "Suspended", lambda: (s := status(cluster, ns, "susp")).get("phase") == "Suspended" and s, 20
    )
    assert cond(st, "Suspended")["status"] == "True"
    wait_for("pods deleted", lambda: not cluster.worker_pods(ns, "susp"), 20)
    cluster.kubectl(
        "patch",
        "finetunejob",
        "susp",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"runPolicy":{"suspend":false}}}',
    )
    (pod,) = wait_for("resumed gang", lambda: running_pods(cluster, ns, "susp", 1), 20)
    assert resumes(pod)
    st = wait_for("Running", lambda: (s := status(cluster, ns, "susp")).get("phase") == "Running" and s, 20)
    assert cond(st, "Suspended")["reason"] == "Resumed" and st["restarts"]["infrastructure"] == 0


def test_dataset_finetune_export_chain(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 1)
    tol = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    cluster.create(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "DatasetBuild",
            "metadata": {"name": "crypto", "namespace": ns},
            "spec": {
                "source": {"path": "corpus"},
                "output": {"path": "datasets/crypto"},
                "pod": {"tolerations": tol},
            },
        }
    )
    job = ftj("train", ns, ns, nodes=1, datasetRef={"name": "crypto"})
    del job["spec"]["dataset"]
    cluster.create(job)
    # the job waits for its dataset, and says so
    st = wait_for(
        "job waits",
        lambda: (
            cond(s := status(cluster, ns, "train"), "DatasetReady").get("reason") == "WaitingForDataset" and s
        ),
        20,
    )
    assert st["phase"] == "Pending" and not cluster.worker_pods(ns, "train")
    build = wait_for(
        "build pod running",
        lambda: [
            p
            for p in cluster.list("pods", ns, "app.kubernetes.io/component=dataset-build")
            if p["status"].get("phase") == "Running"
        ],
        30,
    )[0]
    c = build["spec"]["containers"][0]
    assert c["command"][:3] == ["thinktune", "dataset", "build"] and "nvidia.com/gpu" not in json.dumps(
        c["resources"]
    )
    counts = DatasetCounts(
        documents=3,
        samples=120,
        rejects=5,
        duplicates=2,
        generated_thinking=40,
        train=84,
        val=18,
        test=18,
        warnings=1,
    )
    report = contract.DatasetResult(
        counts=counts,
        output_path="/workspace/thinktune-workspace/datasets/crypto",
        report_path="/workspace/thinktune-workspace/datasets/crypto/report.json",
    )
    cluster.complete_pod(ns, build["metadata"]["name"], report)
    st = wait_for(
        "dataset done",
        lambda: (s := status(cluster, ns, "crypto", "datasetbuild")).get("phase") == "Succeeded" and s,
        20,
    )
    assert st["counts"] == {
        "documents": 3,
        "samples": 120,
        "rejects": 5,
        "duplicates": 2,
        "generatedThinking": 40,
        "train": 84,
        "val": 18,
        "test": 18,
        "warnings": 1,
    }
    assert st["reportPath"] == "/workspace/thinktune-workspace/datasets/crypto/report.json"
    (pod,) = wait_for("training starts", lambda: running_pods(cluster, ns, "train", 0), 30)
    assert "datasets/crypto" in cluster.get("configmap", "train-a0-job", ns)["data"]["job.yaml"]
    cluster.create(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "ModelExport",
            "metadata": {"name": "export", "namespace": ns},
            "spec": {
                "fineTuneJobRef": {"name": "train"},
                "quantize": [{"method": "int8"}],
                "output": {"path": "exports/crypto"},
                "pod": {"tolerations": tol},
            },
        }
    )
    st = wait_for(
        "export waits",
        lambda: (
            cond(s := status(cluster, ns, "export", "modelexport"), "FineTuneJobReady").get("reason")
            == "WaitingForFineTuneJob"
            and s
        ),
        20,
    )
    cluster.complete_pod(
        ns,
        pod["metadata"]["name"],
        contract.TrainResult(
            adapter_path="/workspace/thinktune-workspace/runs/train",
            metrics={"eval_loss": 1.1, "rouge_l": 0.31},
        ),
    )
    st = wait_for(
        "train done", lambda: (s := status(cluster, ns, "train")).get("phase") == "Succeeded" and s, 20
    )
    assert st["metrics"] == {"eval_loss": 1.1, "rouge_l": 0.31} and cond(st, "Succeeded")["status"] == "True"
    assert st["adapterPath"] == "/workspace/thinktune-workspace/runs/train"
    exp = wait_for(
        "export pod",
        lambda: [
            p
            for p in cluster.list("pods", ns, "app.kubernetes.io/component=export")
            if p["status"].get("phase") == "Running"
        ],
        30,
    )[0]
    assert "nvidia.com/gpu" not in json.dumps(exp["spec"]["containers"][0]["resources"])  # int8 runs on CPU
    cluster.complete_pod(
        ns,
        exp["metadata"]["name"],
        contract.ExportResult(
            artifacts=[
                ExportArtifact(name="merged", path="/w/exports/crypto/merged", verified=True),
                ExportArtifact(
                    name="int8",
                    path="/w/exports/crypto/int8",
                    verified=True,
                    perplexity=12.5,
                    term_accuracy=0.8,
                ),
            ]
        ),
    )
    st = wait_for(
        "export done",
        lambda: (s := status(cluster, ns, "export", "modelexport")).get("phase") == "Succeeded" and s,
        20,
    )
    assert [a["name"] for a in st["artifacts"]] == ["merged", "int8"] and st["artifacts"][1][
        "termAccuracy"
    ] == 0.8


def test_deadline_ttl_and_clean_pod_policy(cluster, env, op):
    ns = env
    cluster.gpu_pool(ns, 2)
    # activeDeadlineSeconds: the operator fails the job and stops its workers
    start_gang(cluster, ns, "deadline", 1, runPolicy={"activeDeadlineSeconds": 4})
    st = wait_for(
        "DeadlineExceeded", lambda: (s := status(cluster, ns, "deadline")).get("phase") == "Failed" and s, 30
    )
    assert cond(st, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(
        "workers stopped",
        lambda: not [p for p in cluster.worker_pods(ns, "deadline") if p["status"].get("phase") == "Running"],
        20,
    )
    # success + cleanPodPolicy All + ttlSecondsAfterFinished: pods go at once, the job a little later
    (pod,) = start_gang(
        cluster, ns, "ttl", 1, runPolicy={"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 3}
    )
    cluster.complete_pod(ns, pod["metadata"]["name"], contract.TrainResult(adapter_path="/w/runs/ttl"))
    wait_for("job deleted after TTL", lambda: cluster.get("finetunejob", "ttl", ns) is None, 30)
    wait_for("pods cleaned", lambda: not cluster.worker_pods(ns, "ttl"), 30)


def test_gang_scheduler_and_kueue_passthrough(cluster, env, op):
    """PodGroup requested but no scheduler-plugins CRD in this cluster: the job says so in an Event and runs
    with the default scheduler; Kueue's queue-name label and pod-group annotations are on every worker."""
    ns = env
    cluster.gpu_pool(ns, 2)
    rp = {"schedulingPolicy": {"gangScheduler": "coscheduling", "queue": "team-a"}}
    pods = start_gang(cluster, ns, "gangsched", 2, runPolicy=rp)
    for p in pods:
        lab = p["metadata"]["labels"]
        assert lab["kueue.x-k8s.io/queue-name"] == "team-a"
        assert lab["kueue.x-k8s.io/pod-group-name"] == "gangsched-a0"
        assert lab["scheduling.x-k8s.io/pod-group"] == "gangsched-a0"
        assert p["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "2"
    assert "PodGroupUnavailable" in reasons(cluster, ns, "gangsched")
