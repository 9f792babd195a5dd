"""The update engine: ``compile_update(spec)`` once, ``Update.apply(doc)`` per document.

An operator update (``{$set: {...}, $inc: {...}}``) compiles into a tree like
MongoDB's: one internal node per path component and one leaf (an operator, see
``update_ops``) per updated path. Conflicting paths (``a`` and ``a.b``, or the same
path twice) are rejected at compile time; ``$[]``/``$[<id>]`` nodes and the positional
``$`` whose targets coincide at run time are merged then, and two leaves meeting on
one element is a conflict too.

Applying walks the tree in MongoDB's order (field names lexicographically, array
indexes numerically) and builds the new document copy-on-write: containers on a
changed path are copied, everything else is shared with the input, which is never
mutated. An error anywhere leaves the input as it was. The result of ``apply`` may
share unchanged sub-documents with its input; treat both as immutable values.

A replacement update (``{a: 1}``) swaps the whole document, keeping ``_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from bson.objectid import ObjectId

from lauradb.bsonkit.order import bson_equal
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.update_ops import (
    ApplyContext,
    Leaf,
    RenameSourceLeaf,
    RenameTargetLeaf,
    identical,
    make_leaf,
    normalize_value,
    read_rename_source,
)
from lauradb.query.update_paths import (
    ALL_ELEMENTS,
    MAX_PADDING,
    POSITIONAL,
    Blocked,
    array_filter_identifier,
    array_index,
    child_order_key,
    describe,
    is_array_filter_part,
    is_valid_identifier,
    sort_child_names,
    split_update_path,
    type_name,
)

__all__ = [
    "OPERATORS",
    "Update",
    "build_upsert_document",
    "compile_update",
    "modified_paths",
]

OPERATORS = frozenset(
    {
        "$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$setOnInsert",
        "$currentDate", "$push", "$addToSet", "$pull", "$pullAll", "$pop", "$bit",
    }
)  # fmt: skip

Path = tuple[str, ...]
ElementFilter = Callable[[Any], bool]


# ----------------------------------------------------------------------------------
# The update tree.


class _Node:
    __slots__ = ()

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        raise NotImplementedError


Child = _Node | Leaf


def _conflict(path: Path) -> LauraError:
    return LauraError(
        ErrorCode.CONFLICTING_UPDATE_OPERATORS,
        f"Update created a conflict at '{'.'.join(path)}'",
    )


def _merge(left: Child, right: Child, path: Path) -> Child:
    """MongoDB's createUpdateNodeByMerging: internal nodes merge, leaves conflict."""
    if isinstance(left, ObjectNode) and isinstance(right, ObjectNode):
        merged = ObjectNode()
        for name in {**left.children, **right.children}:
            a = left.children.get(name)
            b = right.children.get(name)
            merged.children[name] = _merge_optional(a, b, (*path, name))
        if left.positional is not None or right.positional is not None:
            merged.positional = _merge_optional(left.positional, right.positional, (*path, "$"))
        merged.finish()
        return merged
    if isinstance(left, ArrayNode) and isinstance(right, ArrayNode):
        merged_array = ArrayNode(left.filters)
        for name in {**left.children, **right.children}:
            a = left.children.get(name)
            b = right.children.get(name)
            merged_array.children[name] = _merge_optional(a, b, (*path, f"$[{name}]"))
        merged_array.finish()
        return merged_array
    raise _conflict(path)


def _merge_optional(left: Child | None, right: Child | None, path: Path) -> Child:
    if left is None:
        assert right is not None
        return right
    if right is None:
        return left
    return _merge(left, right, path)


class ObjectNode(_Node):
    """An internal node whose children are fields (or array indexes) of its value."""

    __slots__ = ("_ordered", "_positional_cache", "children", "positional")

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}
        self.positional: Child | None = None
        self._ordered: list[tuple[str, Child]] = []
        self._positional_cache: dict[str, list[tuple[str, Child]]] = {}

    def finish(self) -> None:
        """Fix the application order once all children are in."""
        self._ordered = [(name, self.children[name]) for name in sort_child_names(list(self.children))]
        for child in self.children.values():
            if isinstance(child, (ObjectNode, ArrayNode)):
                child.finish()
        if isinstance(self.positional, (ObjectNode, ArrayNode)):
            self.positional.finish()

    def _children_for(self, ctx: ApplyContext, path: Path) -> list[tuple[str, Child]]:
        positional = self.positional
        if positional is None:
            return self._ordered
        if ctx.position is None:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "The positional operator did not find the match needed from the query.",
            )
        matched = str(ctx.position)
        cached = self._positional_cache.get(matched)
        if cached is not None:
            return cached
        literal = self.children.get(matched)
        if literal is not None:
            merged = _merge(positional, literal, (*path, matched))
            if isinstance(merged, (ObjectNode, ArrayNode)):
                merged.finish()
            ordered = [(n, merged if n == matched else c) for n, c in self._ordered]
        else:
            key = child_order_key(matched)
            ordered = list(self._ordered)
            at = 0
            while at < len(ordered) and child_order_key(ordered[at][0]) < key:
                at += 1
            ordered.insert(at, (matched, positional))
        self._positional_cache[matched] = ordered
        return ordered

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        children = self._children_for(ctx, path)
        t = type(value)
        if t is dict:
            return self._apply_dict(value, children, ctx, path, under_array)
        if value is MISSING:
            return self._apply_missing(children, ctx, path, under_array)
        if t is list:
            return self._apply_list(value, children, ctx, path)
        if isinstance(value, dict):  # a dict subclass (SON, OrderedDict)
            return self._apply_dict(value, children, ctx, path, under_array)
        blocked = value if t is Blocked else Blocked(path[-1], value, len(path))
        for name, child in children:
            child.apply(blocked, ctx, (*path, name), under_array)
        return value

    @staticmethod
    def _apply_dict(
        value: dict[str, Any],
        children: list[tuple[str, Child]],
        ctx: ApplyContext,
        path: Path,
        under_array: bool,
    ) -> Any:
        new: dict[str, Any] | None = None
        for name, child in children:
            current = value.get(name, MISSING)
            result = child.apply(current, ctx, (*path, name), under_array)
            if result is current:
                continue
            if new is None:
                new = dict(value)
            if result is MISSING:
                del new[name]
            else:
                new[name] = result
        return value if new is None else new

    @staticmethod
    def _apply_missing(
        children: list[tuple[str, Child]], ctx: ApplyContext, path: Path, under_array: bool
    ) -> Any:
        new: dict[str, Any] | None = None
        for name, child in children:
            result = child.apply(MISSING, ctx, (*path, name), under_array)
            if result is not MISSING:
                if new is None:
                    new = {}
                new[name] = result
        return MISSING if new is None else new

    @staticmethod
    def _apply_list(
        value: list[Any], children: list[tuple[str, Child]], ctx: ApplyContext, path: Path
    ) -> Any:
        new: list[Any] | None = None
        for name, child in children:
            index = array_index(name)
            if index is None:
                child.apply(Blocked(path[-1], value, len(path)), ctx, (*path, name), True)
                continue
            items = value if new is None else new
            current = items[index] if index < len(items) else MISSING
            result = child.apply(current, ctx, (*path, name), True)
            if result is current:
                continue
            if new is None:
                new = list(value)
            if index < len(new):
                new[index] = None if result is MISSING else result
            elif result is not MISSING:
                if index - len(new) > MAX_PADDING:
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        f"can't backfill array to larger than {MAX_PADDING} elements "
                        f"(path '{'.'.join((*path, name))}')",
                    )
                new.extend([None] * (index - len(new)))
                new.append(result)
        return value if new is None else new


class ArrayNode(_Node):
    """An internal node for ``$[]`` / ``$[<id>]``: children keyed by identifier."""

    __slots__ = ("_merge_cache", "_ordered", "children", "filters")

    def __init__(self, filters: Mapping[str, ElementFilter]) -> None:
        self.filters = filters
        self.children: dict[str, Child] = {}
        self._ordered: list[tuple[str, Child, ElementFilter | None]] = []
        self._merge_cache: dict[tuple[str, ...], Child] = {}

    def finish(self) -> None:
        self._ordered = [
            (name, self.children[name], None if name == ALL_ELEMENTS else self.filters[name])
            for name in sorted(self.children)
        ]
        for child in self.children.values():
            if isinstance(child, (ObjectNode, ArrayNode)):
                child.finish()

    def _child_for(self, element: Any, path: Path) -> Child | None:
        matched: list[tuple[str, Child]] = []
        for name, child, element_filter in self._ordered:
            if element_filter is None or element_filter(element):
                matched.append((name, child))
        if not matched:
            return None
        if len(matched) == 1:
            return matched[0][1]
        names = tuple(name for name, _ in matched)
        cached = self._merge_cache.get(names)
        if cached is None:
            cached = matched[0][1]
            for _, other in matched[1:]:
                cached = _merge(cached, other, path)
            self._merge_cache[names] = cached
        return cached

    def apply(self, value: Any, ctx: ApplyContext, path: Path, under_array: bool) -> Any:
        if value is MISSING or type(value) is Blocked:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"The path '{'.'.join(path)}' must exist in the document in order to apply "
                "array updates.",
            )
        if type(value) is not list:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"Cannot apply array updates to non-array element {path[-1]}: {describe(value)}",
            )
        new: list[Any] | None = None
        for i, element in enumerate(value):
            element_path = (*path, str(i))
            child = self._child_for(element, element_path)
            if child is None:
                continue
            result = child.apply(element, ctx, element_path, True)
            if result is element:
                continue
            if new is None:
                new = list(value)
            new[i] = None if result is MISSING else result
        return value if new is None else new


# ----------------------------------------------------------------------------------
# Compilation.


def _parse_error(message: str) -> LauraError:
    return LauraError(ErrorCode.FAILED_TO_PARSE, message)


def _filter_identifiers(spec: Mapping[str, Any], out: list[str]) -> None:
    for key, value in spec.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, (list, tuple)):
            for branch in value:
                if isinstance(branch, Mapping):
                    _filter_identifiers(branch, out)
        elif not key.startswith("$"):
            identifier = key.split(".", 1)[0]
            if identifier not in out:
                out.append(identifier)


def _filter_engine() -> Any:
    try:
        from lauradb.query import filter as filter_engine
    except ImportError as exc:  # pragma: no cover - the filter engine ships with us
        raise LauraError(
            ErrorCode.NOT_IMPLEMENTED, "arrayFilters and upserts need the filter engine"
        ) from exc
    return filter_engine


def _compile_element_filter(identifier: str, spec: Mapping[str, Any]) -> ElementFilter:
    matcher = _filter_engine().compile_filter(normalize_value(spec))

    def element_filter(element: Any) -> bool:
        return bool(matcher({identifier: element}))

    return element_filter


def _compile_array_filters(
    array_filters: Sequence[Mapping[str, Any]] | None,
) -> dict[str, ElementFilter]:
    if array_filters is None:
        return {}
    if isinstance(array_filters, (str, bytes, Mapping)) or not isinstance(
        array_filters, Iterable
    ):
        raise LauraError(ErrorCode.TYPE_MISMATCH, "arrayFilters must be an array of objects")
    compiled: dict[str, ElementFilter] = {}
    for spec in array_filters:
        if not isinstance(spec, Mapping):
            raise LauraError(
                ErrorCode.TYPE_MISMATCH,
                f"Each array filter must be an object, found {type_name(spec)}",
            )
        identifiers: list[str] = []
        _filter_identifiers(spec, identifiers)
        if not identifiers:
            raise _parse_error(
                "Cannot use an expression without a top-level field name in arrayFilters"
            )
        if len(identifiers) > 1:
            raise _parse_error(
                "Error parsing array filter :: caused by :: Expected a single top-level field "
                f"name, found '{identifiers[0]}' and '{identifiers[1]}'"
            )
        identifier = identifiers[0]
        if not is_valid_identifier(identifier):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                "Error parsing array filter :: caused by :: The top-level field name must be "
                f"an alphanumeric string beginning with a lowercase letter, found '{identifier}'",
            )
        if identifier in compiled:
            raise _parse_error(
                f"Found multiple array filters with the same top-level field name {identifier}"
            )
        compiled[identifier] = _compile_element_filter(identifier, spec)
    return compiled


class _TreeBuilder:
    """Inserts (path, leaf) pairs into the tree, detecting conflicts like MongoDB."""

    def __init__(self, filters: Mapping[str, ElementFilter]) -> None:
        self.filters = filters
        self.root = ObjectNode()
        self.used_identifiers: set[str] = set()

    def _child_key(self, part: str, dotted: str) -> str:
        if not is_array_filter_part(part):
            return part
        identifier = array_filter_identifier(part)
        if identifier != ALL_ELEMENTS:
            if identifier not in self.filters:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"No array filter found for identifier '{identifier}' in path '{dotted}'",
                )
            self.used_identifiers.add(identifier)
        return identifier

    @staticmethod
    def _get(node: _Node, key: str, part: str) -> Child | None:
        if isinstance(node, ObjectNode):
            return node.positional if part == POSITIONAL else node.children.get(key)
        assert isinstance(node, ArrayNode)
        return node.children.get(key)

    @staticmethod
    def _set(node: _Node, key: str, part: str, child: Child) -> None:
        if isinstance(node, ObjectNode) and part == POSITIONAL:
            node.positional = child
        else:
            assert isinstance(node, (ObjectNode, ArrayNode))
            node.children[key] = child

    def add(self, parts: Path, leaf: Leaf) -> None:
        dotted = ".".join(parts)
        current: _Node = self.root
        for i, part in enumerate(parts[:-1]):
            key = self._child_key(part, dotted)
            wants_array = is_array_filter_part(parts[i + 1])
            child = self._get(current, key, part)
            if child is None:
                child = ArrayNode(self.filters) if wants_array else ObjectNode()
                self._set(current, key, part, child)
            elif not isinstance(child, ArrayNode if wants_array else ObjectNode):
                raise LauraError(
                    ErrorCode.CONFLICTING_UPDATE_OPERATORS,
                    f"Updating the path '{dotted}' would create a conflict at "
                    f"'{'.'.join(parts[: i + 1])}'",
                )
            assert isinstance(child, _Node)
            current = child
        last = parts[-1]
        key = self._child_key(last, dotted)
        if self._get(current, key, last) is not None:
            raise LauraError(
                ErrorCode.CONFLICTING_UPDATE_OPERATORS,
                f"Updating the path '{dotted}' would create a conflict at '{dotted}'",
            )
        self._set(current, key, last, leaf)


def _operator_argument_error(operator: str, arg: Any) -> LauraError:
    return _parse_error(
        f"Modifiers operate on fields but we found type {type_name(arg)} instead. For example: "
        f"{{$mod: {{<field>: ...}}}} not {{{operator}: {describe(arg)}}}"
    )


def _rename_paths(source: str, target: Any) -> tuple[Path, Path]:
    """Validate one ``$rename`` pair and split both paths."""
    if not isinstance(target, str):
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"The 'to' field for $rename must be a string: {source}: {describe(target)}",
        )
    source_parts = split_update_path(source, "$rename")
    target_parts = split_update_path(target, "$rename")
    if "\0" in target:
        raise LauraError(
            ErrorCode.BAD_VALUE, "The 'to' field for $rename cannot contain an embedded null byte"
        )
    if source_parts == target_parts:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"The source and target field for $rename must differ: {source}: \"{target}\"",
        )
    shorter = min(len(source_parts), len(target_parts))
    if source_parts[:shorter] == target_parts[:shorter]:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            "The source and target field for $rename must not be on the same path: "
            f"{source}: \"{target}\"",
        )
    for parts, side in ((source_parts, "source"), (target_parts, "destination")):
        if any(p == POSITIONAL or is_array_filter_part(p) for p in parts):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"The {side} field for $rename may not be dynamic: {'.'.join(parts)}",
            )
    return source_parts, target_parts


def _describe_spec(spec: Mapping[str, Any]) -> str:
    return describe(normalize_value(spec))


class Update:
    """A compiled update; apply it to any number of documents."""

    __slots__ = (
        "_paths",
        "_renames",
        "_replacement",
        "_root",
        "has_array_filters",
        "is_replacement",
        "needs_position",
    )

    def __init__(
        self,
        *,
        root: ObjectNode | None,
        replacement: dict[str, Any] | None,
        paths: list[str],
        renames: list[Path],
        needs_position: bool,
        has_array_filters: bool,
    ) -> None:
        self._root = root
        self._replacement = replacement
        self._paths = paths
        self._renames = renames
        self.is_replacement: bool = replacement is not None
        self.needs_position: bool = needs_position
        self.has_array_filters: bool = has_array_filters

    def __repr__(self) -> str:
        if self._replacement is not None:
            return f"Update(replacement={describe(self._replacement)})"
        return f"Update(paths={self._paths!r})"

    @property
    def paths(self) -> list[str]:
        """The dotted paths the update names (both sides of ``$rename``), as written."""
        return list(self._paths)

    def may_modify(self, field_path: str) -> bool:
        """Whether applying the update could change the value at ``field_path``.

        True when an updated path is a prefix of ``field_path`` or the reverse;
        ``$``, ``$[]`` and ``$[<id>]`` components match any component. A replacement
        may modify everything.
        """
        if self._replacement is not None:
            return True
        target = field_path.split(".")
        for path in self._paths:
            parts = path.split(".")
            if all(
                a == b or a == POSITIONAL or is_array_filter_part(a)
                for a, b in zip(parts, target, strict=False)
            ):
                return True
        return False

    def apply(
        self,
        doc: dict[str, Any],
        *,
        position: int | None = None,
        is_insert: bool = False,
        now: datetime | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Return ``(new_document, modified)``; ``doc`` itself is never mutated.

        ``position`` is the array index the query matched (for the positional ``$``);
        ``is_insert`` enables ``$setOnInsert``; ``now`` is the clock of
        ``$currentDate``. When nothing changes, ``doc`` itself is returned.
        """
        if not isinstance(doc, dict):
            raise LauraError(ErrorCode.BAD_VALUE, "update target must be a document")
        if self._replacement is not None:
            return self._replace(doc)
        assert self._root is not None
        ctx = ApplyContext(doc, position, is_insert, now)
        if self._renames:
            ctx.rename_values = [read_rename_source(doc, parts) for parts in self._renames]
        new = self._root.apply(doc, ctx, (), False)
        if new is doc:
            return doc, False
        if "_id" in doc:
            old_id = doc["_id"]
            new_id = new.get("_id", MISSING)
            if new_id is not old_id and not identical(new_id, old_id):
                raise LauraError(
                    ErrorCode.IMMUTABLE_FIELD,
                    "Performing an update on the path '_id' would modify the immutable field "
                    "'_id'",
                )
        return new, True

    def _replace(self, doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        assert self._replacement is not None
        replacement = self._replacement
        new: dict[str, Any] = {}
        if "_id" in doc:
            old_id = doc["_id"]
            if "_id" in replacement and not bson_equal(replacement["_id"], old_id):
                raise LauraError(
                    ErrorCode.IMMUTABLE_FIELD,
                    "After applying the update, the (immutable) field '_id' was found to have "
                    f"been altered to _id: {describe(replacement['_id'])}",
                )
            new["_id"] = old_id
        elif "_id" in replacement:
            new["_id"] = normalize_value(replacement["_id"])
        for key, value in replacement.items():
            if key != "_id":
                new[key] = normalize_value(value)
        if identical(new, doc):
            return doc, False
        return new, True


def compile_update(
    spec: Mapping[str, Any],
    *,
    array_filters: Sequence[Mapping[str, Any]] | None = None,
) -> Update:
    """Compile an update document (operators or a replacement) and its arrayFilters."""
    if isinstance(spec, (list, tuple)):
        raise LauraError(ErrorCode.NOT_IMPLEMENTED, "pipeline-style updates are not supported")
    if not isinstance(spec, Mapping):
        raise _parse_error(f"the update must be a document, not {type_name(spec)}")
    filters = _compile_array_filters(array_filters)
    keys = list(spec)
    if not keys or not isinstance(keys[0], str) or not keys[0].startswith("$"):
        return _compile_replacement(spec, filters)
    builder = _TreeBuilder(filters)
    paths: list[str] = []
    renames: list[Path] = []
    needs_position = False
    for operator, fields in spec.items():
        if not isinstance(operator, str) or operator not in OPERATORS:
            raise _parse_error(
                f"Unknown modifier: {operator}. Expected a valid update modifier or "
                "pipeline-style update specified as an array"
            )
        if not isinstance(fields, Mapping):
            raise _operator_argument_error(operator, fields)
        for path, arg in fields.items():
            if operator == "$rename":
                source_parts = split_update_path(path, operator)
                # The source is claimed first (MongoDB's conflict placeholder).
                builder.add(source_parts, RenameSourceLeaf(len(renames)))
                source_parts, target_parts = _rename_paths(path, arg)
                builder.add(target_parts, RenameTargetLeaf(len(renames), arg))
                renames.append(source_parts)
                paths.extend((path, arg))
                continue
            parts = split_update_path(path, operator)
            leaf = make_leaf(operator, path, arg)
            builder.add(parts, leaf)
            paths.append(path)
            needs_position = needs_position or POSITIONAL in parts
    unused = [name for name in filters if name not in builder.used_identifiers]
    if unused:
        raise _parse_error(
            f"The array filter for identifier '{unused[0]}' was not used in the update "
            f"{_describe_spec(spec)}"
        )
    builder.root.finish()
    return Update(
        root=builder.root,
        replacement=None,
        paths=paths,
        renames=renames,
        needs_position=needs_position,
        has_array_filters=bool(filters),
    )


def _compile_replacement(spec: Mapping[str, Any], filters: Mapping[str, Any]) -> Update:
    for key in spec:
        if not isinstance(key, str):
            raise _parse_error(f"field names must be strings, not {key!r}")
        if key.startswith("$"):
            raise _parse_error(
                f"The dollar ($) prefixed field '{key}' in '{key}' is not allowed in the "
                "context of an update's replacement document: an update mixes update "
                "operators and plain fields"
            )
    if filters:
        raise _parse_error(
            f"The array filter for identifier '{next(iter(filters))}' was not used in the "
            f"update {_describe_spec(spec)}"
        )
    replacement = normalize_value(spec)
    return Update(
        root=None,
        replacement=replacement,
        paths=[""],
        renames=[],
        needs_position=False,
        has_array_filters=False,
    )


def modified_paths(update: Update) -> list[str]:
    """The top-level fields an update may change (``[""]``: any, for a replacement)."""
    if update.is_replacement:
        return [""]
    tops = {path.split(".", 1)[0] for path in update.paths}
    return sorted(tops)


# ----------------------------------------------------------------------------------
# Upserts.


def _seed_from_equalities(equalities: Mapping[str, Any]) -> dict[str, Any]:
    """The pre-image of an upsert: equality paths as nested documents.

    Two equalities on one path or on a path and its prefix (``{a: {b: 1}, "a.c": 2}``)
    cannot both be honoured, as in MongoDB ("path is matched twice").
    """
    seed: dict[str, Any] = {}
    seeded: list[Path] = []
    for path, value in equalities.items():
        parts = tuple(path.split("."))
        for other in seeded:
            shorter = min(len(parts), len(other))
            if parts[:shorter] == other[:shorter]:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "cannot infer query fields to set, path "
                    f"'{'.'.join(parts[:shorter])}' is matched twice",
                )
        seeded.append(parts)
        current = seed
        for part in parts[:-1]:
            current = current.setdefault(part, {})
        current[parts[-1]] = normalize_value(value)
    return seed


def build_upsert_document(
    filter_spec: Mapping[str, Any], update: Update, *, now: datetime | None = None
) -> dict[str, Any]:
    """The document an upsert inserts when ``filter_spec`` matched nothing.

    Operator updates start from the filter's equality fields (dotted paths become
    nested documents) and apply with ``is_insert=True``; replacements keep only the
    filter's ``_id``. ``_id`` comes first, and is a new ObjectId if nothing set it.
    """
    equalities: Mapping[str, Any] = _filter_engine().equality_fields(filter_spec)
    if update.is_replacement:
        seed = {"_id": normalize_value(equalities["_id"])} if "_id" in equalities else {}
    else:
        seed = _seed_from_equalities(equalities)
    new, _ = update.apply(seed, is_insert=True, now=now)
    if "_id" not in new:
        return {"_id": ObjectId(), **new}
    if next(iter(new)) != "_id":
        rest = {k: v for k, v in new.items() if k != "_id"}
        return {"_id": new["_id"], **rest}
    return new

