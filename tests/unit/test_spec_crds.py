"""The spec models, the generated CRDs and the example CRs agree with each other."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError
from thinktune.crdgen import render_crds
from thinktune.resources import ResourceError, load_file, load_path
from thinktune.spec import (
    KINDS,
    DatasetBuildSpec,
    FineTuneJobSpec,
    ModelExportSpec,
    cluster_path_error,
    parse_cluster,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def _openapi_to_jsonschema(node):
    """Enough of OpenAPI v3 -> JSON Schema to validate documents (CEL rules are checked by the apiserver tests)."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        t = out.get("type")
        out["type"] = [*(t if isinstance(t, list) else [t]), "null"]
        out.pop("nullable")
    if (
        out.get("type") == "object"
        and "properties" in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # the apiserver prunes unknown fields; we want to see them
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if out.get(key) is True:
            out[key] = out.pop("minimum" if key == "exclusiveMinimum" else "maximum")
        elif out.get(key) is False:
            out.pop(key)
    return out


def _schema(kind: str) -> dict:
    plural = KINDS[kind].plural
    crd = yaml.safe_load((CRDS / f"thinktune.io_{plural}.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crds_are_not_stale():
    rendered = render_crds()
    assert sorted(rendered) == sorted(p.name for p in CRDS.glob("*.yaml"))
    for name, text in rendered.items():
        assert (CRDS / name).read_text(encoding="utf-8") == text, (
            f"crds/{name} is stale: run `thinktune crds`"
        )


def test_crd_generation_is_deterministic():
    assert render_crds() == render_crds()


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_metadata(kind):
    crd = yaml.safe_load((CRDS / f"thinktune.io_{KINDS[kind].plural}.yaml").read_text())
    spec = crd["spec"]
    assert spec["group"] == "thinktune.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == [
        {"DatasetBuild": "dsb", "FineTuneJob": "ftj", "ModelExport": "mex"}[kind]
    ]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Phase" in cols and "Age" in cols


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.get("properties", {}).items():
            yield from _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_is_structural_and_described(kind):
    schema = _schema(kind)
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        # a bare preserve-unknown-fields node (extraArgs values) is "any JSON value": structural without a type
        any_value = node == {"x-kubernetes-preserve-unknown-fields": True}
        assert "type" in node or node.get("x-kubernetes-int-or-string") or any_value, f"{path} has no type"
        if path.startswith("$.spec.") and not path.endswith(("[]", "}")):
            # every spec field explains itself in `kubectl explain`
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_spec_field_has_description_in_model(kind):
    def check(model, prefix):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}.{name} lacks a description"
            ann = field.annotation
            for sub in getattr(ann, "__args__", (ann,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    check(sub, f"{prefix}.{name}")

    check(KINDS[kind].spec_model, kind)


def test_cel_rules_present_for_cross_field_rules():
    crd = yaml.safe_load((CRDS / "thinktune.io_finetunejobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.datasetRef) != has(self.dataset)" in rules
    ft_rules = [r["rule"] for r in spec["properties"]["finetuning"]["x-kubernetes-validations"]]
    assert any("qlora" in r for r in ft_rules)


def test_examples_validate_against_generated_schemas():
    docs = []
    for f in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("thinktune.io/"):
                docs.append((f, doc))
    assert {d["kind"] for _, d in docs} == set(KINDS), "examples must include all three kinds"
    for _file, doc in docs:
        schema = _openapi_to_jsonschema(_schema(doc["kind"]))
        jsonschema.validate(doc, schema)  # raises with the failing path
        KINDS[doc["kind"]].model_validate(doc)


def test_schema_rejects_unknown_and_bad_fields():
    doc = yaml.safe_load((ROOT / "examples/crypto/02-finetunejob.yaml").read_text())
    schema = _openapi_to_jsonschema(_schema("FineTuneJob"))
    bad_cases = [
        ("spec.training.learningRate", lambda d: d["spec"]["training"].__setitem__("learningRate", 2.0)),
        ("spec.numNodes", lambda d: d["spec"].__setitem__("numNodes", 0)),
        ("spec.finetuning.method", lambda d: d["spec"]["finetuning"].__setitem__("method", "prefix")),
        ("spec.training.learningrate", lambda d: d["spec"]["training"].__setitem__("learningrate", 1e-4)),
        ("spec.output", lambda d: d["spec"].pop("output")),
    ]
    for label, mutate in bad_cases:
        d = copy.deepcopy(doc)
        mutate(d)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(d, schema)
        with pytest.raises(ValidationError, match=label.rsplit(".", 1)[-1]):
            KINDS["FineTuneJob"].model_validate(d)


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (FineTuneJobSpec, {"output": {"path": "o"}}, "exactly one of datasetRef"),
        (
            FineTuneJobSpec,
            {"output": {"path": "o"}, "dataset": {"path": "d"}, "datasetRef": {"name": "x"}},
            "exactly one of datasetRef",
        ),
        (
            FineTuneJobSpec,
            {"output": {"path": "o"}, "dataset": {"path": "d"}, "enableThinking": False},
            "enableThinking must stay true",
        ),
        (
            FineTuneJobSpec,
            {
                "output": {"path": "o"},
                "dataset": {"path": "d"},
                "finetuning": {"method": "qlora", "strategy": "zero3"},
            },
            "qlora does not work",
        ),
        (
            FineTuneJobSpec,
            {
                "output": {"path": "o"},
                "dataset": {"path": "d"},
                "finetuning": {"method": "lora", "quantizationBit": 4},
            },
            "only valid with method qlora",
        ),
        (
            FineTuneJobSpec,
            {"output": {"path": "o"}, "dataset": {"path": "d"}, "finetuning": {"strategy": "megatron"}},
            "full fine-tuning only",
        ),
        (
            FineTuneJobSpec,
            {
                "output": {"path": "o"},
                "dataset": {"path": "d"},
                "training": {"globalBatchSize": 4, "microBatchSize": 8},
            },
            "must not exceed",
        ),
        (
            FineTuneJobSpec,
            {
                "output": {"path": "o"},
                "dataset": {"path": "d"},
                "numNodes": 2,
                "finetuning": {"strategy": "single"},
            },
            "single cannot use more than one node",
        ),
        (
            DatasetBuildSpec,
            {
                "source": {"path": "s"},
                "output": {"path": "o"},
                "split": {"train": 0.8, "val": 0.15, "test": 0.15},
            },
            "must sum to 1",
        ),
        (
            DatasetBuildSpec,
            {"source": {"path": "s"}, "output": {"path": "o"}, "thinking": {"generate": "model"}},
            "teacherModel is required",
        ),
        (ModelExportSpec, {"output": {"path": "o"}}, "exactly one of fineTuneJobRef or adapter"),
        (ModelExportSpec, {"output": {"path": "o"}, "adapter": {"path": "a"}}, "baseModel is required"),
        (
            ModelExportSpec,
            {
                "output": {"path": "o"},
                "fineTuneJobRef": {"name": "j"},
                "merge": False,
                "quantize": [{"method": "gptq", "bits": 4}],
            },
            "quantizing needs merge",
        ),
        (
            ModelExportSpec,
            {
                "output": {"path": "o"},
                "fineTuneJobRef": {"name": "j"},
                "quantize": [{"method": "gptq", "bits": 4, "groupSize": 7}],
            },
            "groupSize",
        ),
    ],
)
def test_cross_field_rules(model, data, message):
    with pytest.raises(ValueError, match=message):
        model.model_validate(data)


def test_defaults_are_sensible():
    spec = FineTuneJobSpec.model_validate({"output": {"path": "o"}, "dataset": {"path": "d"}})
    assert spec.model.name_or_path == "Qwen/Qwen3-4B-Thinking-2507"
    assert spec.template == "qwen3" and spec.enable_thinking is True
    assert spec.finetuning.method == "lora" and spec.finetuning.strategy == "auto"
    dsb = DatasetBuildSpec.model_validate({"source": {"path": "s"}, "output": {"path": "o"}})
    assert (dsb.split.train, dsb.split.val, dsb.split.test) == (0.7, 0.15, 0.15)


def test_load_errors_name_file_line_and_field(tmp_path):
    f = tmp_path / "ftj.yaml"
    f.write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata:\n  name: x\nspec:\n"
        "  dataset:\n    path: d\n  output:\n    path: o\n  training:\n    learningrate: 0.1\n"
    )
    with pytest.raises(ResourceError) as e:
        load_file(f)
    msg = str(e.value)
    assert f"{f}:11" in msg and "spec.training.learningrate" in msg and "unknown field" in msg


def test_load_errors_on_bad_yaml_and_kind(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: thinktune.io/v1alpha1\nkind: [oops\n")
    with pytest.raises(ResourceError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_file(f)
    g = tmp_path / "kind.yaml"
    g.write_text("apiVersion: thinktune.io/v1alpha1\nkind: TrainJob\nmetadata: {name: a}\nspec: {}\n")
    with pytest.raises(ResourceError, match="not a thinktune kind"):
        load_file(g)


def test_load_path_orders_by_dependency_and_rejects_duplicates(tmp_path):
    loaded = load_path(ROOT / "examples/crypto")
    assert [r.kind for r in loaded] == ["DatasetBuild", "FineTuneJob", "ModelExport"]
    text = (ROOT / "examples/crypto/01-datasetbuild.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(ResourceError, match="defined twice"):
        load_path(tmp_path)


@pytest.mark.parametrize("kind", list(KINDS))
def test_free_form_maps_are_preserved_not_additional_properties(kind):
    """`additionalProperties: true` makes the apiserver reject keys like `nvidia.com/gpu` as unknown fields."""
    for path, node in _walk(_schema(kind)):
        assert node.get("additionalProperties") is not True, path
        if node.get("x-kubernetes-preserve-unknown-fields") and len(node) > 1:
            assert node.get("type") == "object", path


@pytest.mark.parametrize("kind", list(KINDS))
def test_optional_sub_objects_have_no_default(kind):
    """A default on an optional object would make `has(self.baseModel)` always true in CEL rules."""
    for path, node in _walk(_schema(kind)):
        if node.get("nullable"):
            assert "default" not in node, path


def test_volume_rejects_parent_paths_in_both_places():
    """On a cluster (the CRD, and pydantic with the CLUSTER context the operator uses) '..' and absolute paths
    are rejected; locally (no context) they are legitimate: `thinktune dataset build --input ../x`."""
    bad = {"source": {"path": "../x"}, "output": {"path": "o"}}
    with pytest.raises(ValueError, match=r"must not contain '\.\.'"):
        parse_cluster(DatasetBuildSpec, bad)
    assert DatasetBuildSpec.model_validate(bad).source.path == "../x"
    schema = _schema("DatasetBuild")
    rules = schema["properties"]["spec"]["properties"]["source"]["properties"]["path"][
        "x-kubernetes-validations"
    ]
    assert any("[.][.]" in r["rule"] for r in rules)


@pytest.mark.parametrize(
    "value,error",
    [
        ("Qwen/Qwen3-4B-Thinking-2507", None),  # a hub id is not a path that climbs
        ("models/qwen", None),
        ("http://teacher:8000/v1", None),
        ("a..b/c", None),  # '..' inside a name is not a parent reference
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a/..", "'..'"),
    ],
)
def test_cluster_path_rule(value, error):
    got = cluster_path_error(value)
    assert (got is None) if error is None else (error in (got or ""))


def test_every_spec_field_says_what_an_edit_means():
    """kubectl explain <kind>.spec.<field> tells users whether an edit is refused, applied now, at the next attempt
    or re-runs the stage (thinktune.spec.edit_rule); numNodes is the immutable one (CEL self == oldSelf)."""
    import yaml
    from thinktune.crdgen import crd_for
    from thinktune.spec import KINDS

    words = ("Immutable", "Edits apply", "An edit")
    for kind in KINDS.values():
        spec = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for name, prop in spec["properties"].items():
            assert any(w in prop.get("description", "") for w in words), (kind.kind_name, name)
    ftj = crd_for(KINDS["FineTuneJob"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    assert "Immutable" in ftj["properties"]["numNodes"]["description"]
    assert "immediately" in ftj["properties"]["runPolicy"]["description"]
    assert "next attempt" in ftj["properties"]["training"]["description"]
    assert yaml.safe_dump(ftj)  # still plain YAML
