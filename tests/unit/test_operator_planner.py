"""FineTuneJob / DatasetBuild / ModelExport state machines (pure planners), including GPU-failure restarts,
budgets, waiting for capacity, suspend/resume, deadlines, TTL and crash-safety (replaying a plan converges)."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta

from thinktune import contract
from thinktune.contract import EXIT_GPU_FAILURE as GPU_FAILURE_EXIT_CODE
from thinktune.spec import DatasetCounts, ExportArtifact
from thinktune_operator.config import OperatorConfig
from thinktune_operator.planners import finetunejob as P
from thinktune_operator.planners import single_pod as S
from thinktune_operator.planners.common import GangRunning, GangScheduled, GpuFailure, Restart
from thinktune_sandbox.testing import termination_text

CFG = OperatorConfig()
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(nodes=2, status=None, **spec_over):
    spec = {
        "dataset": {"path": "ds"},
        "numNodes": nodes,
        "resourcesPerNode": {"limits": {"nvidia.com/gpu": 8}},
        "output": {"path": "out"},
    }
    spec.update(spec_over)
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": spec,
        "status": status or {},
    }


def gpu_node(name, ready="True", alloc=8, unschedulable=False):
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "capacity": {"nvidia.com/gpu": "8"},
            "allocatable": {"nvidia.com/gpu": str(alloc)},
        },
    }


NODES = {n: gpu_node(n) for n in ("n0", "n1", "n2")}


def wpod(
    attempt,
    rank,
    phase="Running",
    node=None,
    created=T0,
    exit_code=None,
    message=None,
    deleting=None,
    annotations=None,
):
    node = node if node is not None else f"n{rank}"
    cs = {"name": "trainer", "state": {"running": {}}}
    if exit_code is not None:
        cs["state"] = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Error" if exit_code else "Completed",
                "message": message,
            }
        }
    p = {
        "metadata": {
            "name": f"j-a{attempt}-w{rank}",
            "namespace": "ml",
            "creationTimestamp": ts(created),
            "annotations": annotations or {},
        },
        "spec": {"nodeName": node},
        "status": {
            "phase": phase,
            "containerStatuses": [cs],
            "podIP": "10.0.0.1",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": ts(created + timedelta(seconds=2)),
                }
            ]
            if node
            else [],
        },
    }
    if deleting:
        p["metadata"]["deletionTimestamp"] = ts(deleting)
    return p


def run(body, pods=(), nodes=NODES, dataset=None, now=T0, cfg=CFG, gone=()):
    p = P.plan(body, list(pods), nodes, dataset, now, cfg, gone=list(gone))
    body = copy.deepcopy(body)
    body["status"] = p.status
    return p, body


def cond(status, t):
    return next((c for c in status.get("conditions", []) if c["type"] == t), None)


def test_new_job_creates_gang_configmap_service():
    p, b = run(job())
    kinds = [o["kind"] for o in p.creates]
    assert kinds == ["ConfigMap", "Service", "Pod", "Pod"]
    assert [o["metadata"]["name"] for o in p.creates if o["kind"] == "Pod"] == ["j-a0-w0", "j-a0-w1"]
    assert b["status"]["phase"] == "Pending" and b["status"]["attempt"] == 0
    assert cond(b["status"], "Created")["status"] == "True"
    assert b["status"]["observedGeneration"] == 1 and b["status"]["startTime"]
    assert {e.reason for e in p.events} >= {"Created", "GangCreated"}


def test_replaying_the_same_state_is_idempotent():
    p1, b = run(job())
    # operator killed after creating only w0: next plan only creates what is missing (and the rest is 409-safe)
    p2, b2 = run(b, [wpod(0, 0, "Pending", node="")])
    assert [o["metadata"]["name"] for o in p2.creates if o["kind"] == "Pod"] == ["j-a0-w1"]
    assert not p2.deletes
    # everything exists and runs: no creates, no deletes, Running
    p3, b3 = run(b2, [wpod(0, 0), wpod(0, 1)])
    assert not p3.creates and not p3.deletes
    assert b3["status"]["phase"] == "Running" and cond(b3["status"], "Running")["status"] == "True"
    p4, b4 = run(b3, [wpod(0, 0), wpod(0, 1)])
    assert b4["status"] == b3["status"] and not p4.events  # steady state: no status change, no event spam


def test_waits_for_datasetbuild():
    body = job(dataset=None, datasetRef={"name": "ds1"})
    del body["spec"]["dataset"]
    p, b = run(body, dataset=None)
    assert not p.creates and b["status"]["phase"] == "Pending"
    assert cond(b["status"], "DatasetReady")["reason"] == "DatasetNotFound"
    ds = {"spec": {"output": {"path": "datasets/c", "pvc": "data"}}, "status": {"phase": "Running"}}
    p, b = run(b, dataset=ds)
    assert not p.creates and cond(b["status"], "DatasetReady")["reason"] == "WaitingForDataset"
    ds["status"]["phase"] = "Succeeded"
    p, b = run(b, dataset=ds)
    assert cond(b["status"], "DatasetReady")["status"] == "True"
    pod = next(o for o in p.creates if o["kind"] == "Pod")
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/workspace/thinktune-workspace" in mounts and "/workspace/data" in mounts
    cm = next(o for o in p.creates if o["kind"] == "ConfigMap")
    assert "/workspace/data/datasets/c" in cm["data"]["job.yaml"]


def test_gpu_failure_restarts_whole_gang_avoiding_node():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    msg = termination_text(
        contract.FailureMessage(
            reason="GPUFailure",
            category="gpu_failure",
            detail="GPU has fallen off the bus",
            message="Xid 79: GPU has fallen off the bus",
            gpu="5",
            node="n1",
            exit_code=GPU_FAILURE_EXIT_CODE,
        )
    )
    failed = wpod(0, 1, "Failed", exit_code=GPU_FAILURE_EXIT_CODE, message=msg)
    p, b = run(b, [wpod(0, 0), failed], now=T0 + timedelta(seconds=60))
    st = b["status"]
    assert st["attempt"] == 1 and st["phase"] == "Restarting"
    assert st["restarts"] == {"application": 0, "infrastructure": 1, "oom": 0}
    assert st["failedNodes"][0]["node"] == "n1" and st["failedNodes"][0]["gpu"] == "5"
    assert st["failedNodes"][0]["reason"] == "GPUFailure"
    assert cond(st, "Restarting")["status"] == "True" and cond(st, "Running")["status"] == "False"
    assert sorted(d.name for d in p.deletes) == ["j-a0-w0", "j-a0-w1"]  # the whole gang
    assert any(e.reason == "GPUFailure" and "n1" in e.message and "attempt 1" in e.message for e in p.events)
    assert (
        GpuFailure("n1", "GPUFailure") in p.observations
        and Restart("infrastructure", "GPUFailure") in p.observations
    )
    # old gang still terminating on healthy nodes: new gang waits (BlockingRecreate)
    terminating = [wpod(0, 0, deleting=T0 + timedelta(seconds=60)), failed]
    p, b = run(b, terminating, now=T0 + timedelta(seconds=61))
    assert not [o for o in p.creates if o["kind"] == "Pod"] and b["status"]["phase"] == "Restarting"
    # old gang gone: new gang, resume env, anti-affinity away from n1
    p, b = run(b, [failed], now=T0 + timedelta(seconds=62))
    pods = [o for o in p.creates if o["kind"] == "Pod"]
    assert [x["metadata"]["name"] for x in pods] == ["j-a1-w0", "j-a1-w1"]
    for x in pods:
        assert x["metadata"]["annotations"]["thinktune.io/resume-from-checkpoint"] == "true"
        assert x["metadata"]["annotations"]["thinktune.io/attempt"] == "1"
        terms = x["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchFields"] == [
            {"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}
        ]
    assert not [o for o in p.observations if isinstance(o, GangRunning)]  # created, not running yet
    # the failed pod of attempt 0 (terminal) was deleted, not waited for
    assert any(d.name == "j-a0-w1" for d in p.deletes)
    # new gang runs on n0 and n2
    p, b = run(b, [wpod(1, 0, node="n0"), wpod(1, 1, node="n2")], now=T0 + timedelta(seconds=70))
    assert b["status"]["phase"] == "Running" and cond(b["status"], "Restarting")["status"] == "False"
    assert GangRunning(1) in p.observations  # the replacement histogram stops here


def test_node_not_ready_under_running_pod():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    nodes = dict(NODES, n0=gpu_node("n0", ready="Unknown"))
    p, b = run(b, [wpod(0, 0), wpod(0, 1)], nodes=nodes)
    assert b["status"]["attempt"] == 1 and b["status"]["failedNodes"][0]["reason"] == "NodeUnknown"
    # pods on a dead node are force-deleted (no kubelet will confirm)
    forced = {d.name: d.force for d in p.deletes}
    assert forced == {"j-a0-w0": True, "j-a0-w1": False}


def test_allocatable_drop_and_cordon():
    for bad in (gpu_node("n1", alloc=7), gpu_node("n1", unschedulable=True)):
        _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
        p, b = run(b, [wpod(0, 0), wpod(0, 1)], nodes=dict(NODES, n1=bad))
        assert (
            b["status"]["restarts"]["infrastructure"] == 1 and b["status"]["failedNodes"][0]["node"] == "n1"
        )


def test_disruption_target_pod():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    w1 = wpod(0, 1)
    w1["status"]["conditions"].append(
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
    )
    _, b = run(b, [wpod(0, 0), w1])
    assert b["status"]["failedNodes"][0]["reason"] == "DisruptionTarget"


def evicted(pod):
    """What the Eviction API leaves: DisruptionTarget first, then the deletion."""
    pod["status"]["conditions"].append(
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    )
    pod["metadata"]["deletionTimestamp"] = ts(T0 + timedelta(seconds=4))
    return pod


def test_evicted_worker_seen_terminating_is_a_disruption_not_a_plain_deletion():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    _, b = run(b, [wpod(0, 0), evicted(wpod(0, 1))], now=T0 + timedelta(seconds=5))
    assert b["status"]["restarts"]["infrastructure"] == 1
    assert [(f["node"], f["reason"]) for f in b["status"]["failedNodes"]] == [("n1", "DisruptionTarget")]


def test_evicted_worker_gone_before_any_reconcile_is_judged_by_its_final_state():
    """kwok (and a fast kubelet) remove an evicted pod at once: the index no longer has it, its final state
    (kept by the runtime) still says where it ran and why it went."""
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    p, b = run(b, [wpod(0, 0)], now=T0 + timedelta(seconds=5), gone=[evicted(wpod(0, 1))])
    assert b["status"]["attempt"] == 1 and cond(b["status"], "Restarting")["reason"] == "DisruptionTarget"
    assert [(f["node"], f["reason"]) for f in b["status"]["failedNodes"]] == [("n1", "DisruptionTarget")]
    # recorded, charged to the infrastructure budget, but the node is not avoided: its own condition decides
    assert (
        b["status"]["failedNodes"][0]["avoided"] is False and b["status"]["restarts"]["infrastructure"] == 1
    )
    p, _ = run(b, [], now=T0 + timedelta(seconds=6))
    pods = [o for o in p.creates if o["kind"] == "Pod"]
    assert len(pods) == 2 and "n1" not in json.dumps([o["spec"].get("affinity") for o in pods])
    # a final state of an older attempt says nothing about this one
    _, b2 = run(b, [], now=T0 + timedelta(seconds=6), gone=[evicted(wpod(0, 1)), evicted(wpod(0, 0))])
    assert b2["status"]["attempt"] == 1 and b2["status"]["restarts"]["infrastructure"] == 1


def test_worker_evicted_and_gone_before_the_gang_was_marked_running_is_still_a_restart():
    """The eviction lands right after the pods start, before any reconcile set Running, and kwok deletes the pod
    at once. A missing rank that was seen is a deletion, not a pod still being created: the gang restarts as a
    new attempt instead of silently recreating the rank under the same one."""
    p, b = run(job())
    assert not cond(b["status"], "Running")
    p, b = run(b, [wpod(0, 0)], now=T0 + timedelta(seconds=3), gone=[evicted(wpod(0, 1))])
    assert b["status"]["attempt"] == 1 and cond(b["status"], "Restarting")["reason"] == "DisruptionTarget"
    assert b["status"]["restarts"]["infrastructure"] == 1
    # never seen at all (the create is still in flight to the index): created again, no verdict
    p, b2 = run(job(), [wpod(0, 0)], now=T0 + timedelta(seconds=3))
    assert b2["status"]["attempt"] == 0 and _pods_on(p) == ["j-a0-w1"]


def test_deleted_worker_that_had_failed_keeps_its_own_verdict():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    failed = wpod(0, 1, phase="Failed", exit_code=1, message="Traceback: ValueError")
    _, b = run(b, [wpod(0, 0)], now=T0 + timedelta(seconds=5), gone=[failed])
    assert b["status"]["restarts"] == {"application": 1, "infrastructure": 0, "oom": 0}
    assert b["status"]["failedNodes"] == []


def test_application_failure_uses_backoff_limit_and_keeps_nodes():
    body = job(runPolicy={"backoffLimit": 1})
    _, b = run(body, [wpod(0, 0), wpod(0, 1)])
    p, b = run(b, [wpod(0, 0), wpod(0, 1, "Failed", exit_code=1, message="ValueError")])
    assert b["status"]["restarts"]["application"] == 1 and b["status"]["attempt"] == 1
    assert (
        b["status"]["failedNodes"] == [] and cond(b["status"], "Restarting")["reason"] == "ApplicationFailure"
    )
    p, b = run(b, [wpod(1, 0), wpod(1, 1, "Failed", exit_code=1)])
    assert (
        b["status"]["phase"] == "Failed" and cond(b["status"], "Failed")["reason"] == "BackoffLimitExceeded"
    )
    assert b["status"]["completionTime"]


def test_infra_budget_is_separate():
    body = job(runPolicy={"backoffLimit": 0, "infraFailureLimit": 2})
    _, b = run(body, [wpod(0, 0), wpod(0, 1)])
    for attempt in range(2):
        _, b = run(
            b,
            [
                wpod(attempt, 0, node="n0"),
                wpod(attempt, 1, "Failed", exit_code=GPU_FAILURE_EXIT_CODE, node=f"n{attempt + 1}"),
            ],
        )
        assert b["status"]["phase"] == "Restarting"
    _, b = run(b, [wpod(2, 0, node="n0"), wpod(2, 1, "Failed", exit_code=GPU_FAILURE_EXIT_CODE, node="n2")])
    assert b["status"]["phase"] == "Failed"
    assert cond(b["status"], "Failed")["reason"] == "InfraFailureLimitExceeded"
    assert b["status"]["restarts"]["application"] == 0


def test_no_healthy_capacity_waits_instead_of_failing():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    nodes = dict(NODES, n2=gpu_node("n2", ready="False"))
    _, b = run(b, [wpod(0, 0), wpod(0, 1, "Failed", exit_code=GPU_FAILURE_EXIT_CODE)], nodes=nodes)
    # n1 failed, n2 NotReady: only n0 left for a 2-node gang
    p, b = run(b, [], nodes=nodes)
    assert b["status"]["phase"] == "Waiting" and not p.creates
    w = cond(b["status"], "Waiting")
    assert w["status"] == "True" and w["reason"] == "NoHealthyCapacity" and "n1" in w["message"]
    assert any(e.reason == "NoHealthyCapacity" for e in p.events)
    # still waiting: no new events
    p, b = run(b, [], nodes=nodes)
    assert not p.events and p.requeue_after
    # a healthy node joins: gang created
    nodes["n3"] = gpu_node("n3")
    p, b = run(b, [], nodes=nodes)
    assert len([o for o in p.creates if o["kind"] == "Pod"]) == 2
    assert cond(b["status"], "Waiting")["status"] == "False"


def test_success_reads_termination_message_and_cleans_running_pods():
    _, b = run(job(nodes=1), [wpod(0, 0)])
    msg = termination_text(
        contract.TrainResult(
            adapter_path="/workspace/x/out/adapter", metrics={"evalLoss": 1.2, "rougeL": 0.3}, oom_retries=1
        )
    )
    p, b = run(b, [wpod(0, 0, "Succeeded", exit_code=0, message=msg)])
    st = b["status"]
    assert st["phase"] == "Succeeded" and cond(st, "Succeeded")["status"] == "True"
    assert st["adapterPath"] == "/workspace/x/out/adapter" and st["metrics"] == {
        "evalLoss": 1.2,
        "rougeL": 0.3,
    }
    assert st["restarts"]["oom"] == 1
    assert not p.deletes  # cleanPodPolicy Running: finished pods stay for logs


def test_clean_pod_policy_all_and_ttl():
    body = job(nodes=1, runPolicy={"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 60})
    _, b = run(body, [wpod(0, 0)])
    p, b = run(b, [wpod(0, 0, "Succeeded", exit_code=0)], now=T0)
    assert [d.name for d in p.deletes] == ["j-a0-w0"] and p.requeue_after == 60
    p, b = run(b, [], now=T0 + timedelta(seconds=30))
    assert not p.delete_self and 29 <= p.requeue_after <= 31
    p, b = run(b, [], now=T0 + timedelta(seconds=61))
    assert p.delete_self


def test_suspend_and_resume():
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)])
    b["spec"]["runPolicy"] = {"suspend": True}
    p, b = run(b, [wpod(0, 0), wpod(0, 1)])
    assert b["status"]["phase"] == "Suspended" and cond(b["status"], "Suspended")["status"] == "True"
    assert sorted(d.name for d in p.deletes) == ["j-a0-w0", "j-a0-w1"]
    b["spec"]["runPolicy"] = {"suspend": False}
    # the runtime still holds the final states of the workers the suspend deleted: they are not lost workers
    p, b = run(b, [], gone=[wpod(0, 0, deleting=T0), wpod(0, 1, deleting=T0)])
    assert cond(b["status"], "Suspended")["reason"] == "Resumed" and b["status"]["attempt"] == 1
    assert [o["metadata"]["name"] for o in p.creates if o["kind"] == "Pod"] == ["j-a1-w0", "j-a1-w1"]
    assert b["status"]["restarts"]["infrastructure"] == 0


def test_active_deadline():
    body = job(runPolicy={"activeDeadlineSeconds": 100})
    _, b = run(body, [], now=T0)
    p, b = run(b, [wpod(0, 0), wpod(0, 1)], now=T0 + timedelta(seconds=50))
    assert b["status"]["phase"] == "Running" and p.requeue_after <= 50
    p, b = run(b, [wpod(0, 0), wpod(0, 1)], now=T0 + timedelta(seconds=101))
    assert b["status"]["phase"] == "Failed" and cond(b["status"], "Failed")["reason"] == "DeadlineExceeded"
    assert len(p.deletes) == 2


def test_lost_worker_restarts_gang():
    _, b = run(job(), [])
    p, b = run(b, [wpod(0, 0)])  # still being created (w1 not in the index yet): create what is missing
    assert [o["metadata"]["name"] for o in p.creates if o["kind"] == "Pod"] == ["j-a0-w1"]
    _, b = run(b, [wpod(0, 0), wpod(0, 1)])
    assert b["status"]["phase"] == "Running"
    p, b = run(b, [wpod(0, 0)], now=T0 + timedelta(seconds=5))  # w1 vanished from a running gang
    assert b["status"]["attempt"] == 1 and cond(b["status"], "Restarting")["reason"] == "PodLost"
    assert b["status"]["restarts"]["infrastructure"] == 1 and not p.creates
    assert [e.reason for e in p.events] == ["GPUFailure"]


def test_whole_gang_gone_while_operator_down_is_a_restart():
    """Evicted and deleted while the operator was down: no pod is left to show it; status says it ran."""
    _, b = run(job(), [])
    _, b = run(b, [wpod(0, 0), wpod(0, 1)])
    p, b = run(b, [], now=T0 + timedelta(seconds=60))
    assert b["status"]["attempt"] == 1 and cond(b["status"], "Restarting")["reason"] == "PodLost"
    assert b["status"]["restarts"]["infrastructure"] == 1 and not p.creates
    p, b = run(b, [], now=T0 + timedelta(seconds=61))
    assert [o["metadata"]["name"] for o in p.creates if o["kind"] == "Pod"] == ["j-a1-w0", "j-a1-w1"]


def test_progress_pod_and_gang_scheduled_observation():
    _, b = run(job(), [])
    p, b = run(b, [wpod(0, 0), wpod(0, 1)])
    assert p.progress_pod["metadata"]["name"] == "j-a0-w0" and p.progress_port == 9400
    assert GangScheduled(0, 2.0) in p.observations


def test_invalid_spec_fails_cleanly():
    body = job()
    body["spec"]["numNodes"] = 0
    p, b = run(body)
    assert b["status"]["phase"] == "Failed" and cond(b["status"], "Failed")["reason"] == "InvalidSpec"


# ---- DatasetBuild / ModelExport


def dsb(status=None, gen=1):
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "DatasetBuild",
        "metadata": {"name": "ds", "namespace": "ml", "uid": "u", "generation": gen},
        "spec": {"source": {"path": "corpus"}, "output": {"path": "datasets/c"}},
        "status": status or {},
    }


def spod(name, phase, exit_code=None, message=None, node="n0"):
    cs = {
        "name": "c",
        "state": {"terminated": {"exitCode": exit_code, "message": message}}
        if exit_code is not None
        else {"running": {}},
    }
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node},
        "status": {"phase": phase, "containerStatuses": [cs]},
    }


def test_datasetbuild_lifecycle():
    body = dsb()
    p = S.plan_datasetbuild(body, [], NODES, T0, CFG)
    pod = next(o for o in p.creates if o["kind"] == "Pod")
    name = pod["metadata"]["name"]
    body["status"] = p.status
    p = S.plan_datasetbuild(body, [spod(name, "Running")], NODES, T0, CFG)
    assert p.status["phase"] == "Running"
    body["status"] = p.status
    msg = termination_text(
        contract.DatasetResult(
            counts=DatasetCounts(
                documents=2, samples=10, train=7, val=2, test=1, rejects=3, generated_thinking=4
            ),
            output_path="/workspace/thinktune-workspace/datasets/c",
            report_path="/workspace/thinktune-workspace/datasets/c/report.json",
        )
    )
    p = S.plan_datasetbuild(body, [spod(name, "Succeeded", 0, msg)], NODES, T0, CFG)
    assert p.status["phase"] == "Succeeded" and p.status["counts"]["samples"] == 10
    assert p.status["outputPath"] == "datasets/c" and p.status["counts"]["generatedThinking"] == 4
    assert p.status["reportPath"] == "/workspace/thinktune-workspace/datasets/c/report.json"
    body["status"] = p.status
    p = S.plan_datasetbuild(body, [spod(name, "Succeeded", 0, msg)], NODES, T0, CFG)
    assert not p.creates and not p.events  # done stays done
    # spec change -> new generation -> new pod
    body["spec"]["dedup"] = {"enabled": False}
    body["metadata"]["generation"] = 2
    p = S.plan_datasetbuild(body, [spod(name, "Succeeded", 0, msg)], NODES, T0, CFG)
    new = next(o for o in p.creates if o["kind"] == "Pod")
    assert new["metadata"]["name"] != name and p.status["phase"] == "Pending"


def test_datasetbuild_infra_retry_then_app_failure():
    body = dsb()
    p = S.plan_datasetbuild(body, [], NODES, T0, CFG)
    name = next(o for o in p.creates if o["kind"] == "Pod")["metadata"]["name"]
    body["status"] = p.status
    nodes = dict(NODES, n0=gpu_node("n0", ready="False"))
    p = S.plan_datasetbuild(body, [spod(name, "Failed", 1)], nodes, T0, CFG)
    assert [o["metadata"]["name"] for o in p.creates if o["kind"] == "Pod"] == [f"{name}-r1"]
    body["status"] = p.status
    p = S.plan_datasetbuild(
        body,
        [
            spod(name, "Failed", 1),
            spod(
                f"{name}-r1",
                "Failed",
                contract.EXIT_USAGE,
                termination_text(
                    contract.FailureMessage(
                        reason="InvalidInput",
                        category="application",
                        message="no markdown found",
                        exit_code=contract.EXIT_USAGE,
                    )
                ),
            ),
        ],
        NODES,
        T0,
        CFG,
    )
    assert p.status["phase"] == "Failed" and "no markdown" in p.status["message"]


def test_modelexport_waits_for_job_then_exports():
    body = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "mx", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {
            "fineTuneJobRef": {"name": "j"},
            "quantize": [{"method": "gptq", "bits": 4}],
            "output": {"path": "exp"},
        },
        "status": {},
    }
    p = S.plan_modelexport(body, [], NODES, {"spec": {}, "status": {"phase": "Running"}}, T0, CFG)
    assert not p.creates and p.status["phase"] == "Pending"
    assert cond(p.status, "FineTuneJobReady")["reason"] == "WaitingForFineTuneJob"
    body["status"] = p.status
    jobbody = {
        "spec": {"output": {"path": "out"}, "model": {"nameOrPath": "Qwen/Qwen3-4B-Thinking-2507"}},
        "status": {"phase": "Succeeded"},
    }
    p = S.plan_modelexport(body, [], NODES, jobbody, T0, CFG)
    pod = next(o for o in p.creates if o["kind"] == "Pod")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    body["status"] = p.status
    msg = termination_text(
        contract.ExportResult(
            artifacts=[
                ExportArtifact(name="merged", path="/w/exp/merged", verified=True, size_bytes=5),
                ExportArtifact(
                    name="gptq-int4",
                    path="/w/exp/gptq",
                    verified=False,
                    term_accuracy=0.9,
                    warnings=["ppl +7%"],
                ),
            ]
        )
    )
    p = S.plan_modelexport(
        body, [spod(pod["metadata"]["name"], "Succeeded", 0, msg)], NODES, jobbody, T0, CFG
    )
    assert p.status["phase"] == "Succeeded" and [a["name"] for a in p.status["artifacts"]] == [
        "merged",
        "gptq-int4",
    ]
    # the typed artifacts reach the status in its camelCase spelling
    assert p.status["artifacts"][0]["sizeBytes"] == 5 and p.status["artifacts"][1]["termAccuracy"] == 0.9
    assert p.status["artifacts"][1]["warnings"] == ["ppl +7%"]


def test_success_without_result_message_warns():
    _, b = run(job(nodes=1), [wpod(0, 0)])
    p, b = run(b, [wpod(0, 0, "Succeeded", exit_code=0, message="some log line, no JSON")])
    assert b["status"]["phase"] == "Succeeded" and "adapterPath" not in b["status"]
    assert any(e.reason == "NoResult" for e in p.events)


def _pods_on(p):
    return sorted(o["metadata"]["name"] for o in p.creates if o["kind"] == "Pod")


def test_repaired_node_is_used_again_and_gpu_failures_expire():
    """Cordon (the node's own signal) -> forgiven as soon as it is uncordoned; exit 75 on a node that looks
    fine -> avoided until the TTL passes."""
    two = {n: gpu_node(n) for n in ("n0", "n1")}
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)], nodes=two)
    cordoned = dict(two, n1=gpu_node("n1", unschedulable=True))
    _, b = run(b, [wpod(0, 0), wpod(0, 1)], nodes=cordoned)
    rec = b["status"]["failedNodes"][0]
    assert rec["node"] == "n1" and rec["nodeUnhealthy"] is True
    p, b = run(b, [], nodes=cordoned)
    assert b["status"]["phase"] == "Waiting" and not p.creates
    p, b = run(b, [], nodes=two, now=T0 + timedelta(seconds=1))  # uncordoned
    assert len(_pods_on(p)) == 2 and b["status"]["failedNodes"] == []
    assert any(e.reason == "NodeUsable" for e in p.events)
    # a GPU failure the node never showed
    _, b = run(job(), [wpod(0, 0), wpod(0, 1)], nodes=two)
    _, b = run(b, [wpod(0, 0), wpod(0, 1, "Failed", exit_code=GPU_FAILURE_EXIT_CODE)], nodes=two)
    assert b["status"]["failedNodes"][0]["nodeUnhealthy"] is False
    p, b = run(b, [], nodes=two)
    assert b["status"]["phase"] == "Waiting" and p.requeue_after
    later = T0 + timedelta(seconds=CFG.failed_node_ttl_s + 1)
    p, b = run(b, [], nodes=two, now=later)
    assert len(_pods_on(p)) == 2 and b["status"]["failedNodes"] == []


def test_unschedulable_gang_says_why_and_times_out():
    body = job(runPolicy={"schedulingPolicy": {"scheduleTimeoutSeconds": 60}})
    p, b = run(body)
    pending = [wpod(0, 0), wpod(0, 1, "Pending", node="")]
    pending[1]["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: no PVC"}
    ]
    p, b = run(b, pending, now=T0 + timedelta(seconds=5))
    assert "0/3 nodes: no PVC" in b["status"]["message"]
    assert cond(b["status"], "Scheduled")["status"] == "False"
    assert [e.reason for e in p.events] == ["Unschedulable"] and p.requeue_after <= 55
    p, b = run(b, pending, now=T0 + timedelta(seconds=61))
    assert b["status"]["phase"] == "Waiting" and b["status"]["attempt"] == 1
    assert cond(b["status"], "Waiting")["reason"] == "GangScheduleTimeout"
    assert {d.name for d in p.deletes} == {"j-a0-w0", "j-a0-w1"}  # the scheduled worker releases its GPUs
    assert b["status"]["restarts"]["infrastructure"] == 0  # not charged to any budget


def test_peer_failing_first_waits_for_the_ranks_own_verdict():
    """Issue 17: node n1's GPU fails (rank 1 exits 75); rank 0 on the healthy n0 loses its collective peer and
    exits 1 first. Judged at once, that was an application restart and n1 was never avoided. The planner waits
    (cfg.peer_settle_s from the first finishedAt) while a worker of the gang still runs."""

    def failed(pod, t):
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = ts(t)
        return pod

    body = job(runPolicy={"backoffLimit": 3, "infraFailureLimit": 3})
    _, b = run(body, [wpod(0, 0), wpod(0, 1)])
    collateral = failed(wpod(0, 0, "Failed", exit_code=1, message="Connection closed by peer"), T0)
    p, b2 = run(b, [collateral, wpod(0, 1)], now=T0 + timedelta(seconds=1))
    assert b2["status"].get("attempt", 0) == 0 and not p.deletes and p.requeue_after <= 1
    gpu = termination_text(
        contract.FailureMessage(
            reason="GPUFailure",
            category="gpu_failure",
            detail="uncorrectable ECC error",
            node="n1",
            exit_code=75,
        )
    )
    cause = failed(
        wpod(0, 1, "Failed", exit_code=GPU_FAILURE_EXIT_CODE, message=gpu), T0 + timedelta(seconds=2)
    )
    _, b3 = run(b2, [collateral, cause], now=T0 + timedelta(seconds=2))
    st = b3["status"]
    assert st["attempt"] == 1 and st["restarts"]["infrastructure"] == 1 and st["restarts"]["application"] == 0
    assert [f["node"] for f in st["failedNodes"]] == ["n1"]
    # no verdict from the peer within the window: the application failure is judged as before
    _, b4 = run(b2, [collateral, wpod(0, 1)], now=T0 + timedelta(seconds=CFG.peer_settle_s + 1))
    assert b4["status"]["attempt"] == 1 and b4["status"]["restarts"]["application"] == 1


def test_unschedulable_gang_kept_off_a_node_usable_again_is_released_at_once():
    """A worker's node affinity is fixed when it is created: rank 1 keeps off n1 (exit 75 there) and n2 is full.
    Once n1's failure is forgiven (TTL) the gang is released and placed again without waiting for
    scheduleTimeoutSeconds; while n1 is still avoided it waits."""
    two = {n: gpu_node(n) for n in ("n0", "n1", "n2")}
    cfg = dataclasses.replace(CFG, failed_node_ttl_s=30.0)  # well inside the 300 s scheduleTimeoutSeconds
    failed = {"node": "n1", "reason": "GPUFailure", "time": ts(T0), "nodeUnhealthy": False, "avoided": True}
    body = job(status={"attempt": 1, "failedNodes": [failed], "phase": "Restarting"})
    p, b = run(body, nodes=two, cfg=cfg, now=T0 + timedelta(seconds=1))
    pods = {o["metadata"]["name"]: o for o in p.creates if o["kind"] == "Pod"}
    assert pods["j-a1-w1"]["metadata"]["annotations"]["thinktune.io/avoided-nodes"] == "n1"
    stuck = [
        wpod(1, 0, node="n0"),
        wpod(1, 1, "Pending", node="", annotations={"thinktune.io/avoided-nodes": "n1"}),
    ]
    stuck[1]["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available",
        }
    ]
    p, b = run(b, stuck, nodes=two, cfg=cfg, now=T0 + timedelta(seconds=5))
    assert b["status"]["attempt"] == 1 and not p.deletes  # n1 still avoided: waits
    later = T0 + timedelta(seconds=cfg.failed_node_ttl_s + 1)
    p, b = run(b, stuck, nodes=two, cfg=cfg, now=later)
    assert b["status"]["attempt"] == 2 and {d.name for d in p.deletes} == {"j-a1-w0", "j-a1-w1"}
    assert [e.reason for e in p.events if e.reason == "GangRescheduled"] == ["GangRescheduled"]
    assert b["status"]["restarts"]["infrastructure"] == 0 and "n1" in b["status"]["message"]
    p, b = run(b, [], nodes=two, cfg=cfg, now=later)
    assert _pods_on(p) == ["j-a2-w0", "j-a2-w1"]
    assert "n1" not in json.dumps([o["spec"].get("affinity") for o in p.creates if o["kind"] == "Pod"])
