"""Field paths: splitting, plain lookup and MongoDB's matcher traversal."""

from __future__ import annotations

from typing import Any

import pytest
from bson.son import SON

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.paths import (
    any_path_candidate,
    array_index,
    get_path,
    get_path_values,
    has_path,
    iter_path_candidates,
    iter_path_candidates_with_offsets,
    split_path,
)


def candidates(doc: Any, path: str, expand: bool = True) -> list[Any]:
    return list(iter_path_candidates(doc, split_path(path), expand))


def with_offsets(doc: Any, path: str, expand: bool = True) -> list[tuple[Any, int | None]]:
    return list(iter_path_candidates_with_offsets(doc, split_path(path), expand))


# -- split_path


def test_split_path() -> None:
    assert split_path("a") == ("a",)
    assert split_path("a.b.0.c") == ("a", "b", "0", "c")


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_split_path_rejects_empty_components(path: str) -> None:
    with pytest.raises(LauraError) as info:
        split_path(path)
    assert info.value.code == ErrorCode.EMPTY_FIELD_NAME


def test_split_path_rejects_non_strings() -> None:
    with pytest.raises(LauraError) as info:
        split_path(3)  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.BAD_VALUE


def test_array_index_only_canonical_numbers() -> None:
    assert array_index("0") == 0
    assert array_index("12") == 12
    assert array_index("01") == -1
    assert array_index("-1") == -1
    assert array_index("a") == -1
    assert array_index("\u0661") == -1  # ARABIC-INDIC DIGIT ONE: not ASCII


# -- get_path


def test_get_path_plain_lookup() -> None:
    doc = {"a": {"b": {"c": 1}}, "n": None, "arr": [10, {"x": 5}, [7, 8]]}
    assert get_path(doc, "a.b.c") == 1
    assert get_path(doc, "a.b") == {"c": 1}
    assert get_path(doc, "n") is None
    assert get_path(doc, "missing") is MISSING
    assert get_path(doc, "a.x.y") is MISSING
    assert get_path(doc, "a.b.c.d") is MISSING  # through a scalar
    assert get_path(doc, "arr.0") == 10
    assert get_path(doc, "arr.1.x") == 5
    assert get_path(doc, "arr.2.1") == 8
    assert get_path(doc, "arr.3") is MISSING
    assert get_path(doc, "arr.x") is MISSING  # no fan-out over arrays
    assert get_path(doc, ("a", "b")) == {"c": 1}


def test_get_path_numeric_field_in_document() -> None:
    assert get_path({"a": {"0": "zero"}}, "a.0") == "zero"


def test_has_path_counts_null_as_present() -> None:
    assert has_path({"a": None}, "a")
    assert not has_path({"a": {}}, "a.b")


def test_get_path_works_on_other_mappings() -> None:
    assert get_path(SON([("a", SON([("b", 2)]))]), "a.b") == 2


# -- matcher traversal


def test_scalar_and_missing() -> None:
    assert candidates({"a": 1}, "a") == [1]
    assert candidates({}, "a") == [MISSING]
    assert candidates({"a": {"b": 2}}, "a.b") == [2]
    assert candidates({"a": {"b": 2}}, "a.c") == [MISSING]


def test_scalar_before_end_of_path_is_missing() -> None:
    assert candidates({"a": 5}, "a.b") == [MISSING]
    assert candidates({"a": None}, "a.b") == [MISSING]


def test_leaf_array_yields_elements_then_array() -> None:
    assert candidates({"a": [1, 2]}, "a") == [1, 2, [1, 2]]
    assert candidates({"a": []}, "a") == [[]]


def test_leaf_array_without_expansion() -> None:
    assert candidates({"a": [1, 2]}, "a", expand=False) == [[1, 2]]


def test_nested_arrays_are_not_unwound_twice() -> None:
    assert candidates({"a": [[1, 2], 3]}, "a") == [[1, 2], 3, [[1, 2], 3]]


def test_array_of_documents() -> None:
    doc = {"a": [{"b": 1}, {"b": [2, 3]}, {"c": 4}, 5]}
    assert candidates(doc, "a.b") == [1, 2, 3, [2, 3], MISSING]


def test_array_of_scalars_gives_no_candidates_for_subpath() -> None:
    assert candidates({"a": [1, 2]}, "a.b") == []
    assert candidates({"a": []}, "a.b") == []


def test_deep_array_traversal() -> None:
    doc = {"a": [{"b": [{"c": 1}, {"c": 2}]}, {"b": {"c": 3}}]}
    assert candidates(doc, "a.b.c") == [1, 2, 3]


def test_numeric_component_is_index_and_field() -> None:
    doc = {"a": [{"0": "field"}, "x"]}
    # element 0 is a document: searched for field "0", then taken positionally
    assert candidates(doc, "a.0") == ["field", {"0": "field"}]
    assert candidates({"a": [5, 6]}, "a.1") == [6]
    assert candidates({"a": [5, 6]}, "a.2") == []
    assert candidates({"a": {"0": 7}}, "a.0") == [7]


def test_numeric_component_followed_by_field() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}]}
    assert candidates(doc, "a.0.b") == [MISSING, 1, MISSING]
    assert candidates(doc, "a.1.b") == [MISSING, MISSING, 2]


def test_positional_element_not_unwound_at_leaf() -> None:
    assert candidates({"a": [[1, 2]]}, "a.0") == [[1, 2]]


def test_positional_nested_array_then_field() -> None:
    doc = {"a": [[{"b": 1}, {"b": 2}]]}
    assert candidates(doc, "a.0.b") == [1, 2]


def test_non_canonical_number_is_only_a_field_name() -> None:
    assert candidates({"a": [5, 6]}, "a.01") == []
    assert candidates({"a": [{"01": 5}]}, "a.01") == [5]


def test_offsets_leaf_array() -> None:
    assert with_offsets({"a": [1, 2]}, "a") == [(1, 0), (2, 1), ([1, 2], None)]
    assert with_offsets({"a": 1}, "a") == [(1, None)]


def test_offsets_prefer_outermost_array() -> None:
    doc = {"a": [{"b": [1, 2]}, {"b": [3]}]}
    assert with_offsets(doc, "a.b") == [
        (1, 0),
        (2, 0),
        ([1, 2], 0),
        (3, 1),
        ([3], 1),
    ]


def test_offsets_positional_component_is_not_implicit() -> None:
    doc = {"a": [{"b": [7, 8]}]}
    assert with_offsets(doc, "a.0.b") == [(MISSING, 0), (7, 0), (8, 1), ([7, 8], None)]
    assert with_offsets({"a": [[1, 2]]}, "a.0") == [([1, 2], None)]


def test_get_path_values() -> None:
    assert get_path_values({"a": [{"b": 1}, {"b": [2]}]}, "a.b") == [1, 2, [2]]
    assert get_path_values({"a": [1, 2]}, "a", expand_leaf_arrays=False) == [[1, 2]]


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"a": [{"b": 1}, {"b": [2, 3]}, {"c": 4}, 5]}, "a.b"),
        ({"a": [[{"b": 1}, {"b": 2}]]}, "a.0.b"),
        ({"a": [{"0": "x"}, "y"]}, "a.0"),
        ({"a": [1, 2]}, "a.b"),
        ({"a": 5}, "a.b"),
        ({"a": [[1, 2], 3]}, "a"),
    ],
)
def test_any_path_candidate_agrees_with_iterator(doc: Any, path: str) -> None:
    parts = split_path(path)
    for expand in (True, False):
        seen = list(iter_path_candidates(doc, parts, expand))
        for target in [*seen, 99, MISSING]:

            def same(v: Any, t: Any = target) -> bool:
                return bool(v == t) and type(v) is type(t)

            expected = any(same(v) for v in seen)
            assert any_path_candidate(doc, parts, same, expand) == expected
