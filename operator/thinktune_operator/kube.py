"""Thin, idempotent wrappers over the Kubernetes API (sync `kubernetes` client; called from worker threads)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from thinktune.spec import GROUP, KINDS, VERSION

from .rejections import Rejection

log = logging.getLogger(__name__)

PLURALS = {k: cls.plural for k, cls in KINDS.items()}
CORE_KINDS = {
    "Pod": "pod",
    "ConfigMap": "config_map",
    "Service": "service",
    "PersistentVolumeClaim": "persistent_volume_claim",
}
PLURAL_OF = {"PodGroup": "podgroups"}


class NotInstalled(Exception):
    """The API for an optional child kind (PodGroup) does not exist in this cluster."""


class Rejected(Exception):
    """The API server refused to create a child (4xx other than 409/429): retrying at once cannot help."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.text())
        self.rejection = rejection


def _server_message(e: ApiException) -> tuple[str, str]:
    try:
        body = json.loads(e.body or "{}")
    except (ValueError, TypeError):
        body = {}
    return str(body.get("reason") or e.reason or ""), str(body.get("message") or e.reason or "")


def load_client(pool: int = 32) -> client.ApiClient:
    try:
        config.load_incluster_config()
        cfg = client.Configuration.get_default_copy()
    except config.ConfigException:
        cfg = client.Configuration()
        config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # ---- children
    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        """True if created, False if it already existed (deterministic names make this the idempotency key)."""
        kind = obj["kind"]
        ns = obj["metadata"]["namespace"]
        try:
            if kind in CORE_KINDS:
                getattr(self.core, f"create_namespaced_{CORE_KINDS[kind]}")(ns, obj, _preload_content=False)
            else:
                group, version = obj["apiVersion"].split("/")
                self.custom.create_namespaced_custom_object(group, version, ns, PLURAL_OF[kind], obj)
            return True
        except ApiException as e:
            if e.status == 409:
                self._check_owner(obj)
                return False
            if e.status == 404 and kind not in CORE_KINDS:
                raise NotInstalled(f"{obj['apiVersion']} {kind} is not served by this cluster") from e
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                reason, message = _server_message(e)
                raise Rejected(Rejection(e.status, reason, message, kind, obj["metadata"]["name"])) from e
            raise

    def _check_owner(self, obj: dict[str, Any]) -> None:
        """An existing object of our deterministic name is ours only if its controller is our CR (same uid):
        a child of another CR, or a stranger's object, is reported, never adopted."""
        want = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if not want:
            return
        kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            if kind in CORE_KINDS:
                resp = getattr(self.core, f"read_namespaced_{CORE_KINDS[kind]}")(
                    name, ns, _preload_content=False
                )
                existing = json.loads(resp.data)
            else:
                group, version = obj["apiVersion"].split("/")
                existing = self.custom.get_namespaced_custom_object(group, version, ns, PLURAL_OF[kind], name)
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile: the next reconcile creates it
                return
            raise
        have = [r for r in existing["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if have and have[0].get("uid") == want[0].get("uid"):
            return
        owner = f"{have[0].get('kind')} {have[0].get('name')}" if have else "no controller"
        raise Rejected(
            Rejection(
                409,
                "AlreadyExists",
                f"{kind} {name} already exists and belongs to {owner}; not adopting it "
                "(delete or rename it, or rename this resource)",
                kind,
                name,
            )
        )

    def delete(self, namespace: str, kind: str, name: str, force: bool = False) -> None:
        body = client.V1DeleteOptions(
            grace_period_seconds=0 if force else None, propagation_policy="Background"
        )
        try:
            getattr(self.core, f"delete_namespaced_{CORE_KINDS[kind]}")(
                name, namespace, body=body, _preload_content=False
            )
        except ApiException as e:
            if e.status != 404:
                raise

    # ---- our CRs
    def get_cr(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURALS[kind], name, {"status": status}
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def delete_cr(self, kind: str, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], name, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status != 404:
                raise

    # ---- events
    def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str, name: str) -> None:
        """Create the Event `name`; one that exists already was posted before a crash (not an error)."""
        m = body["metadata"]
        now = datetime.now(UTC)
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": m.get("namespace", "default"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": m["name"],
                "namespace": m.get("namespace"),
                "uid": m.get("uid"),
                "resourceVersion": m.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "thinktune-operator"},
            "reportingComponent": "thinktune.io/operator",
            "reportingInstance": "thinktune-operator",
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(m.get("namespace", "default"), ev, _preload_content=False)
        except ApiException as e:  # events are best effort (e.g. the namespace is being terminated)
            if e.status == 409:
                return
            detail = e.reason
            try:
                detail = json.loads(e.body or "{}").get("message") or e.reason
            except ValueError:
                pass
            log.warning("event %s/%s not posted: %s", reason, m["name"], detail)
