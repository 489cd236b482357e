"""Generate the CustomResourceDefinitions in crds/ from the pydantic models in thinktune.spec.

Pydantic emits JSON Schema (with $refs, anyOf-null for optionals, titles); Kubernetes wants a *structural*
OpenAPI v3 schema: every node typed, no $ref, `nullable` instead of null unions, descriptions for
`kubectl explain`, and CEL rules under `x-kubernetes-validations`. This module does that translation and
nothing else, so `thinktune crds` is deterministic (a test regenerates and compares bytes).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from thinktune.spec import GROUP, KINDS, VERSION, Resource, SpecModel, edit_rule

_DROP = {"title", "discriminator"}


def _models_by_name() -> dict[str, type[SpecModel]]:
    out: dict[str, type[SpecModel]] = {}

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            out[sub.__name__] = sub
            walk(sub)

    walk(SpecModel)
    return out


def _full_default(name: str) -> dict[str, Any] | None:
    """The defaults of a sub-object whose fields all have defaults, written out in full.

    An empty `default: {}` is not enough: the apiserver checks a default against the object's CEL rules
    before defaulting its fields, so a rule reading `self.train` fails on `{}` with "no such key"."""
    model = _models_by_name().get(name)
    if model is None:
        return None
    try:
        instance = model()
    except Exception:  # has required fields
        return None
    return instance.model_dump(mode="json", by_alias=True, exclude_none=True)


def _cel_rules_by_title() -> dict[str, list[dict[str, str]]]:
    """CEL rules keyed by model class name (pydantic uses it as the $defs key)."""
    out: dict[str, list[dict[str, str]]] = {}

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            rules = sub.__dict__.get("cel_rules")
            if rules:
                out[sub.__name__] = rules
            walk(sub)

    walk(SpecModel)
    return out


def _structural(node: Any, defs: dict[str, Any], rules: dict[str, list], ref_name: str | None = None) -> Any:
    if isinstance(node, list):
        return [_structural(x, defs, rules) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        resolved = copy.deepcopy(defs[name])
        # a description at the reference site (the field's) wins over the model's docstring
        for k in ("description", "default", "nullable"):
            if k in node:
                resolved[k] = node[k]
        return _structural(resolved, defs, rules, ref_name=name)

    node = dict(node)
    # Optional[X] -> X + nullable
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"]
            nullable = len(options) < len(node[key])
            if len(options) == 1:
                merged = dict(options[0])
                for k, v in node.items():
                    if k != key:
                        merged[k] = v
                if nullable:
                    merged["nullable"] = True
                return _structural(merged, defs, rules, ref_name)
            # int | "auto": Kubernetes' int-or-string
            types = {o.get("type") for o in options}
            if types <= {"integer", "string"}:
                out = {k: v for k, v in node.items() if k not in (key, *_DROP)}
                out["x-kubernetes-int-or-string"] = True
                if nullable:
                    out["nullable"] = True
                return out
            raise ValueError(f"cannot express union {node[key]!r} structurally")

    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in _DROP or k == "$defs":
            continue
        if k == "default" and v is None:
            continue  # "unset" must stay absent, or has() in CEL rules would see a null field
        if k == "const":
            out["enum"] = [v]
            continue
        if k == "properties":
            out[k] = {pk: _with_empty_default(_structural(pv, defs, rules)) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = _structural(v, defs, rules)
        elif k == "additionalProperties" and v is False:
            continue  # structural schemas prune unknown fields already; pydantic's extra=forbid maps to that
        elif k == "exclusiveMinimum" and not isinstance(v, bool):
            out["minimum"], out["exclusiveMinimum"] = v, True
        elif k == "exclusiveMaximum" and not isinstance(v, bool):
            out["maximum"], out["exclusiveMaximum"] = v, True
        else:
            out[k] = v
    if "enum" in out and "type" not in out:
        values = out["enum"]
        out["type"] = "integer" if all(isinstance(x, int) for x in values) else "string"
    if out.get("x-kubernetes-preserve-unknown-fields"):
        if len(out) > 1:  # a bare {preserve-unknown-fields} is "any JSON value" (extraArgs values): no type
            out.setdefault("type", "object")
        # `additionalProperties: true` (pydantic's dict[str, Any]) makes the apiserver treat keys like
        # `nvidia.com/gpu` as unknown fields; preserve-unknown-fields is the structural way to say "anything"
        if out.get("additionalProperties") is True:
            out.pop("additionalProperties")
    if ref_name and ref_name in rules:
        out["x-kubernetes-validations"] = rules[ref_name]
    if ref_name and out.get("type") == "object" and not out.get("required"):
        default = _full_default(ref_name)
        if default is not None:
            out["__default__"] = default
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        out.pop("additionalProperties")
    return out


def _with_empty_default(prop: Any) -> Any:
    """Sub-objects whose fields all have defaults get `default: {}`, so the apiserver fills in (and shows in
    `kubectl get -o yaml`) the same defaults pydantic applies locally, and their CEL rules always run."""
    if not isinstance(prop, dict):
        return prop
    full = prop.pop("__default__", None)
    if (
        prop.get("type") == "object"
        and "properties" in prop
        and not prop.get("nullable")
        and not prop.get("required")
        and "default" not in prop
    ):
        prop["default"] = full if full is not None else {}
    return prop


def model_schema(model: type[SpecModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs, _cel_rules_by_title(), ref_name=model.__name__)
    schema.pop("__default__", None)
    return schema


def crd_for(kind: type[Resource]) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec_model)
    status_schema = model_schema(kind.status_model)
    # kopf and future versions may add status fields; declared ones are still validated
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    status_schema.pop("required", None)
    status_schema["description"] = f"Observed state of the {kind.kind_name}, written by the operator."
    spec_schema["description"] = kind.description
    for name, prop in spec_schema.get("properties", {}).items():
        rule = edit_rule(kind.kind_name, name)
        text = prop.get("description", "").rstrip()
        # a field whose own description already says what an edit does keeps its words
        if not any(w in text for w in ("Immutable", "Edits apply", "An edit")):
            prop["description"] = f"{text} {rule}".strip()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "thinktune"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind_name,
                "listKind": f"{kind.kind_name}List",
                "plural": kind.plural,
                "singular": kind.kind_name.lower(),
                "shortNames": [kind.short_name],
                "categories": ["thinktune", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "thinktune.io/v1alpha1"},
                                "kind": {"type": "string", "description": kind.kind_name},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated sub-schemas (e.g. the same CEL rules) are written out in full: anchors confuse readers."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by `thinktune crds` from thinktune/spec.py. Do not edit by hand.\n"


def render_crds() -> dict[str, str]:
    """file name -> YAML text, for every kind."""
    out = {}
    for kind in KINDS.values():
        text = yaml.dump(crd_for(kind), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=120)
        out[f"{GROUP}_{kind.plural}.yaml"] = HEADER + text
    return out


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_crds().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
