"""Reading thinktune CR YAML files (the same documents `kubectl apply` takes) for local runs.

Errors name the file, the document, the field path and the line, and say what to do: a user editing
`examples/crypto/ftj.yaml` should not need to read a pydantic traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from thinktune.spec import API_VERSION, KINDS, DatasetBuild, FineTuneJob, ModelExport, Resource

# Local runs execute kinds in this order: a FineTuneJob needs its dataset, an export needs its adapter.
KIND_ORDER = {"DatasetBuild": 0, "FineTuneJob": 1, "ModelExport": 2}


class ResourceError(Exception):
    """A CR file that cannot be used, with a message meant for the user."""


@dataclass
class LoadedResource:
    resource: DatasetBuild | FineTuneJob | ModelExport
    file: Path
    line: int  # 1-based line of the document start

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def name(self) -> str:
        return self.resource.metadata.name

    @property
    def base_dir(self) -> Path:
        """Relative paths in a CR are relative to the file they are written in."""
        return self.file.parent

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def _line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location, best effort."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    node = v
                    line = k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _format_validation_error(err: ValidationError, file: Path, node: yaml.Node, prefix: tuple = ()) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(prefix) + tuple(
            x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-"))
        )
        # pydantic reports union/model-validator locations with class names; keep only real field names
        loc = tuple(
            x for x in loc if not (isinstance(x, str) and x[:1].isupper() and x not in ("DatasetBuild",))
        )
        field = ".".join(str(x) for x in loc) or "(document)"
        line = _line_of(node, loc)
        msg = e["msg"].removeprefix("Value error, ")
        hint = ""
        if e["type"] == "extra_forbidden":
            hint = " (unknown field: check the spelling; `kubectl explain` or crds/ list the valid fields)"
        elif e["type"] == "missing":
            hint = " (required field is missing)"
        where = f"{file}:{line}" if line else str(file)
        lines.append(f"{where}: {field}: {msg}{hint}")
    return "\n".join(lines)


def parse_document(doc: dict[str, Any], *, file: Path, node: yaml.Node | None = None) -> Resource:
    if not isinstance(doc, dict):
        raise ResourceError(
            f"{file}: expected a mapping with apiVersion/kind/metadata/spec, got {type(doc).__name__}"
        )
    kind = doc.get("kind")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError(
            f"{file}: apiVersion is {doc.get('apiVersion')!r}; thinktune reads {API_VERSION!r}"
        )
    if kind not in KINDS:
        raise ResourceError(
            f"{file}: kind {kind!r} is not a thinktune kind; expected one of {', '.join(KINDS)}"
        )
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as err:
        raise ResourceError(_format_validation_error(err, file, node)) from None


def load_file(file: Path) -> list[LoadedResource]:
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ResourceError(f"{file}: cannot read: {e.strerror}") from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ResourceError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    out = []
    for node, doc in zip(nodes, docs, strict=True):
        if doc is None:
            continue
        if isinstance(doc, dict) and not str(doc.get("apiVersion", "")).startswith("thinktune.io/"):
            continue  # other Kubernetes objects (a PVC, a Secret) may sit beside the CRs
        res = parse_document(doc, file=file, node=node)
        out.append(LoadedResource(res, file.resolve(), node.start_mark.line + 1))
    return out


def load_path(path: Path) -> list[LoadedResource]:
    """All thinktune CRs in a file or a directory (*.yaml/*.yml, not recursive), in dependency order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise ResourceError(f"{path}: no *.yaml files in this directory")
    elif path.exists():
        files = [path]
    else:
        raise ResourceError(f"{path}: no such file or directory")
    loaded = [r for f in files for r in load_file(f)]
    if not loaded:
        raise ResourceError(f"{path}: no thinktune.io/v1alpha1 resources found")
    seen: dict[tuple[str, str], LoadedResource] = {}
    for r in loaded:
        key = (r.kind, r.name)
        if key in seen:
            raise ResourceError(
                f"{r.file}:{r.line}: {r.kind} {r.name!r} is defined twice "
                f"(also at {seen[key].file}:{seen[key].line})"
            )
        seen[key] = r
    return sorted(loaded, key=lambda r: (KIND_ORDER[r.kind], r.file.name, r.line))
