"""$project, $addFields/$set and $unset: projection trees with computed fields.

A spec is parsed into a tree of ``_Node``s whose leaves are INCLUDE, EXCLUDE or a
compiled expression. Application follows MongoDB's projection executor:

- inclusion: the included fields are copied in *input* order (subdocuments and
  arrays of subdocuments projected recursively, scalars in arrays dropped), then
  computed fields are set in *spec* order; a computed path through a non-document
  replaces it with a new subdocument, through an array applies to every element;
- exclusion: everything but the excluded paths is copied (arrays map over their
  subdocuments, other elements are kept);
- $addFields: everything is kept, computed fields are set as for inclusion.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.expr_core import Variables, compile_expression
from lauradb.query.stages_base import NO_VARS, CompileContext, Doc, Stage, pipeline_error, stage


class _Flag:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INCLUDE = _Flag("INCLUDE")
EXCLUDE = _Flag("EXCLUDE")


class _Node:
    __slots__ = ("children", "computed", "has_computed")

    def __init__(self) -> None:
        self.children: dict[str, Any] = {}  # name -> INCLUDE | EXCLUDE | Expr | _Node
        self.computed: list[tuple[str, Any]] = []  # (name, Expr | _Node) in spec order
        self.has_computed = False

    def finish(self) -> None:
        """Fill ``computed`` and ``has_computed`` bottom-up."""
        self.computed = []
        for name, entry in self.children.items():
            if isinstance(entry, _Node):
                entry.finish()
                if entry.has_computed:
                    self.computed.append((name, entry))
            elif not isinstance(entry, _Flag):
                self.computed.append((name, entry))
        self.has_computed = bool(self.computed)


def _projection_error(message: str) -> LauraError:
    return LauraError(ErrorCode.INVALID_PROJECTION, message)


def _is_flag_value(value: Any) -> bool:
    return isinstance(value, (bool, int, float, Int64, Decimal128))


def _flag_truthy(value: Any) -> bool:
    if isinstance(value, Decimal128):
        return not value.to_decimal().is_zero()
    return bool(value)


def _is_operator(value: dict[str, Any]) -> bool:
    return any(isinstance(k, str) and k.startswith("$") for k in value)


def _split(key: Any, prefix: tuple[str, ...], stage_name: str) -> tuple[str, ...]:
    if not isinstance(key, str) or not key:
        raise _projection_error(f"{stage_name}: field names may not be empty")
    parts = tuple(key.split("."))
    for part in parts:
        if not part:
            raise _projection_error(
                f"{stage_name}: field path '{key}' contains an empty field name"
            )
        if part.startswith("$"):
            raise _projection_error(
                f"{stage_name}: FieldPath field names may not start with '$': '{key}'"
            )
    return prefix + parts


def _insert(root: _Node, parts: tuple[str, ...], leaf: Any) -> None:
    node = root
    for i, part in enumerate(parts[:-1]):
        child = node.children.get(part)
        if child is None:
            child = _Node()
            node.children[part] = child
        elif not isinstance(child, _Node):
            raise _projection_error(
                f"Invalid projection: Path collision at {'.'.join(parts[: i + 1])}"
            )
        node = child
    last = parts[-1]
    if last in node.children:
        raise _projection_error(f"Invalid projection: Path collision at {'.'.join(parts)}")
    node.children[last] = leaf


def _parse(
    spec: dict[str, Any], add_fields: bool, stage_name: str
) -> tuple[_Node, list[tuple[str, Any]]]:
    """The tree plus the flat list of (path, leaf) for mode checks."""
    root = _Node()
    leaves: list[tuple[str, Any]] = []

    def walk(sub: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in sub.items():
            parts = _split(key, prefix, stage_name)
            if isinstance(value, dict) and not _is_operator(value):
                if not value:
                    if add_fields:
                        leaf: Any = compile_expression({"$literal": {}})
                    else:
                        raise _projection_error(
                            "An empty sub-projection is not a valid value. Found empty object "
                            f"at path {'.'.join(parts)}"
                        )
                else:
                    walk(value, parts)
                    continue
            elif not add_fields and _is_flag_value(value):
                leaf = INCLUDE if _flag_truthy(value) else EXCLUDE
            else:
                leaf = compile_expression(value)
            _insert(root, parts, leaf)
            leaves.append((".".join(parts), leaf))

    walk(spec, ())
    root.finish()
    return root, leaves


# ---------------------------------------------------------------- application


def _apply_computed(node: _Node, out: Doc, root: Doc, variables: Variables) -> None:
    for name, entry in node.computed:
        if isinstance(entry, _Node):
            out[name] = _computed_into(entry, out.get(name, MISSING), root, variables)
        else:
            value = entry(root, variables)
            if value is MISSING:
                out.pop(name, None)
            else:
                out[name] = value


def _computed_into(node: _Node, value: Any, root: Doc, variables: Variables) -> Any:
    if isinstance(value, dict):
        out = dict(value)
        _apply_computed(node, out, root, variables)
        return out
    if isinstance(value, list):
        return [_computed_into(node, item, root, variables) for item in value]
    out = {}
    _apply_computed(node, out, root, variables)
    return out


def _included(node: _Node, doc: Doc) -> Doc:
    out: Doc = {}
    children = node.children
    for name, value in doc.items():
        entry = children.get(name)
        if entry is None:
            continue
        if entry is INCLUDE:
            out[name] = value
        elif isinstance(entry, _Node):
            projected = _included_value(entry, value)
            if projected is not MISSING:
                out[name] = projected
    return out


def _included_value(node: _Node, value: Any) -> Any:
    if isinstance(value, dict):
        return _included(node, value)
    if isinstance(value, list):
        out = []
        for item in value:
            projected = _included_value(node, item)
            if projected is not MISSING:
                out.append(projected)
        return out
    return MISSING


def _excluded(node: _Node, doc: Doc) -> Doc:
    out: Doc = {}
    children = node.children
    for name, value in doc.items():
        entry = children.get(name)
        if entry is None:
            out[name] = value
        elif isinstance(entry, _Node):
            out[name] = _excluded_value(entry, value)
        elif entry is not EXCLUDE:
            out[name] = value
    return out


def _excluded_value(node: _Node, value: Any) -> Any:
    if isinstance(value, dict):
        return _excluded(node, value)
    if isinstance(value, list):
        return [_excluded_value(node, item) for item in value]
    return value


def compile_projection_stage(spec: Any, stage_name: str = "$project") -> Stage:
    """Compile an aggregation ``$project`` spec (expressions allowed)."""
    if not isinstance(spec, dict):
        raise pipeline_error(f"{stage_name} specification must be an object")
    if not spec:
        raise _projection_error(f"{stage_name} requires at least one output field")
    tree, leaves = _parse(spec, add_fields=False, stage_name=stage_name)
    others = [leaf for path, leaf in leaves if path != "_id"]
    if others:
        inclusion = any(leaf is INCLUDE or not isinstance(leaf, _Flag) for leaf in others)
    else:  # only _id: {_id: 0} excludes it, {_id: 1} or {_id: <expr>} keeps only it
        inclusion = leaves[0][1] is not EXCLUDE
    if inclusion:
        for path, leaf in leaves:
            if leaf is EXCLUDE and path != "_id":
                raise _projection_error(
                    f"Invalid {stage_name} :: caused by :: Cannot do exclusion on field {path} "
                    "in inclusion projection"
                )
        id_entry = tree.children.get("_id")
        if id_entry is None:
            tree.children = {"_id": INCLUDE, **tree.children}
        elif id_entry is EXCLUDE:
            del tree.children["_id"]
        tree.finish()
        has_computed = tree.has_computed

        def include(docs: Iterator[Doc]) -> Iterator[Doc]:
            for doc in docs:
                out = _included(tree, doc)
                if has_computed:
                    _apply_computed(tree, out, doc, NO_VARS)
                yield out

        return include

    if tree.children.get("_id") is INCLUDE:
        del tree.children["_id"]

    def exclude(docs: Iterator[Doc]) -> Iterator[Doc]:
        for doc in docs:
            yield _excluded(tree, doc)

    return exclude


@stage("$project")
def compile_project(spec: Any, ctx: CompileContext) -> Stage:
    return compile_projection_stage(spec, "$project")


@stage("$addFields", "$set")
def compile_add_fields(spec: Any, ctx: CompileContext) -> Stage:
    if not isinstance(spec, dict):
        raise pipeline_error("$addFields specification stage must be an object")
    if not spec:
        raise _projection_error("$addFields specification must have at least one field")
    tree, _ = _parse(spec, add_fields=True, stage_name="$addFields")

    def add_fields(docs: Iterator[Doc]) -> Iterator[Doc]:
        for doc in docs:
            out = dict(doc)
            _apply_computed(tree, out, doc, NO_VARS)
            yield out

    return add_fields


@stage("$unset")
def compile_unset(spec: Any, ctx: CompileContext) -> Stage:
    paths = [spec] if isinstance(spec, str) else spec
    if not isinstance(paths, list) or not paths:
        raise pipeline_error(
            "$unset specification must be a string or a non-empty array of strings"
        )
    for path in paths:
        if not isinstance(path, str) or not path:
            raise pipeline_error("$unset specification must be a string or an array of strings")
    return compile_projection_stage({path: 0 for path in paths}, "$unset")
