"""Tests of the update engine (lauradb.query.update)."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.errors import ErrorCode, LauraError
from lauradb.query.update import (
    Update,
    build_upsert_document,
    compile_update,
    modified_paths,
)
from lauradb.query.update_ops import identical

NOW = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000)


def apply(
    spec: Mapping[str, Any],
    doc: dict[str, Any],
    *,
    array_filters: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    new, _ = compile_update(spec, array_filters=array_filters).apply(doc, **kwargs)
    return new


def modified(spec: Mapping[str, Any], doc: dict[str, Any], **kwargs: Any) -> bool:
    return compile_update(spec).apply(doc, **kwargs)[1]


def error_code(fn: Callable[[], Any]) -> ErrorCode:
    with pytest.raises(LauraError) as info:
        fn()
    return info.value.code


def compile_error(spec: Any, array_filters: Any = None) -> ErrorCode:
    return error_code(lambda: compile_update(spec, array_filters=array_filters))


def apply_error(spec: Mapping[str, Any], doc: dict[str, Any], **kwargs: Any) -> ErrorCode:
    update = compile_update(spec, array_filters=kwargs.pop("array_filters", None))
    snapshot = copy.deepcopy(doc)
    code = error_code(lambda: update.apply(doc, **kwargs))
    assert identical(doc, snapshot), "a failed update must leave its input unchanged"
    return code


def assert_same(actual: Any, expected: Any) -> None:
    """Equal including BSON types and field order."""
    assert identical(actual, expected), f"{actual!r} != {expected!r}"


# ----------------------------------------------------------------------------------
# Parsing and compile-time validation.


class TestCompile:
    def test_operator_and_replacement_forms(self) -> None:
        assert not compile_update({"$set": {"a": 1}}).is_replacement
        assert compile_update({"a": 1}).is_replacement
        assert compile_update({}).is_replacement

    def test_unknown_operator(self) -> None:
        assert compile_error({"$foo": {"a": 1}}) == ErrorCode.FAILED_TO_PARSE
        assert compile_error({"$pushAll": {"a": [1]}}) == ErrorCode.FAILED_TO_PARSE

    @pytest.mark.parametrize("arg", [1, "x", None, [1], True])
    def test_operator_argument_must_be_a_document(self, arg: Any) -> None:
        assert compile_error({"$set": arg}) == ErrorCode.FAILED_TO_PARSE

    def test_mixing_operators_and_fields(self) -> None:
        assert compile_error({"$set": {"a": 1}, "b": 2}) == ErrorCode.FAILED_TO_PARSE
        assert compile_error({"b": 2, "$set": {"a": 1}}) == ErrorCode.FAILED_TO_PARSE

    def test_empty_operator_argument_is_a_no_op(self) -> None:
        # MongoDB 5.0+: {$set: {}} is accepted and changes nothing.
        doc = {"_id": 1, "a": 1}
        new, changed = compile_update({"$set": {}, "$unset": {}}).apply(doc)
        assert new is doc and not changed

    def test_pipeline_updates_are_not_supported(self) -> None:
        assert compile_error([{"$set": {"a": 1}}]) == ErrorCode.NOT_IMPLEMENTED

    @pytest.mark.parametrize(
        "spec",
        [
            {"$set": {"a": 1}, "$inc": {"a": 1}},
            {"$set": {"a": 1, "a.b": 1}},
            {"$set": {"a.b": 1}, "$unset": {"a": 1}},
            {"$set": {"a.b.c": 1}, "$push": {"a.b": 1}},
            {"$rename": {"a": "b"}, "$set": {"a": 1}},
            {"$rename": {"a": "b"}, "$set": {"b.c": 1}},
            {"$rename": {"a": "b", "c": "b"}},
            {"$set": {"a.$[]": 1, "a.b": 1}},
            {"$set": {"a.$[]": 1, "a.0": 1}},
            {"$set": {"a.$[]": 1}, "$inc": {"a.$[]": 1}},
            {"$set": {"a.$": 1}, "$inc": {"a.$": 1}},
        ],
    )
    def test_conflicting_paths(self, spec: dict[str, Any]) -> None:
        assert compile_error(spec) == ErrorCode.CONFLICTING_UPDATE_OPERATORS

    def test_non_conflicting_siblings(self) -> None:
        compile_update({"$set": {"a.b": 1, "a.c": 1}, "$inc": {"ab": 1, "a.bc": 1}})
        compile_update({"$set": {"a.$[]": 1, "b.$[]": 2}})

    def test_conflict_message(self) -> None:
        with pytest.raises(LauraError) as info:
            compile_update({"$set": {"a": 1, "a.b": 2}})
        assert info.value.message == "Updating the path 'a.b' would create a conflict at 'a'"

    @pytest.mark.parametrize(
        ("path", "code"),
        [
            ("", ErrorCode.EMPTY_FIELD_NAME),
            ("a..b", ErrorCode.EMPTY_FIELD_NAME),
            ("a.", ErrorCode.EMPTY_FIELD_NAME),
            ("$", ErrorCode.BAD_VALUE),
            ("$.a", ErrorCode.BAD_VALUE),
            ("a.$.b.$", ErrorCode.BAD_VALUE),
            ("$[].a", ErrorCode.BAD_VALUE),
            ("a.$foo", ErrorCode.DOLLAR_PREFIXED_FIELD_NAME),
            ("$foo", ErrorCode.DOLLAR_PREFIXED_FIELD_NAME),
        ],
    )
    def test_invalid_paths(self, path: str, code: ErrorCode) -> None:
        assert compile_error({"$set": {path: 1}}) == code

    @pytest.mark.parametrize(
        ("spec", "code"),
        [
            ({"$inc": {"a": "x"}}, ErrorCode.TYPE_MISMATCH),
            ({"$inc": {"a": None}}, ErrorCode.TYPE_MISMATCH),
            ({"$inc": {"a": True}}, ErrorCode.TYPE_MISMATCH),
            ({"$mul": {"a": [1]}}, ErrorCode.TYPE_MISMATCH),
            ({"$push": {"a": {"$each": 1}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$foo": 1}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$slice": 1.5}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$slice": "1"}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$position": "x"}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$sort": 2}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$sort": "x"}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$sort": {}}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$sort": {"x": 0}}}}, ErrorCode.BAD_VALUE),
            ({"$push": {"a": {"$each": [1], "$sort": {"x..y": 1}}}}, ErrorCode.BAD_VALUE),
            ({"$addToSet": {"a": {"$each": 1}}}, ErrorCode.TYPE_MISMATCH),
            ({"$addToSet": {"a": {"$each": [1], "x": 1}}}, ErrorCode.BAD_VALUE),
            ({"$pullAll": {"a": 1}}, ErrorCode.BAD_VALUE),
            ({"$pop": {"a": 2}}, ErrorCode.FAILED_TO_PARSE),
            ({"$pop": {"a": "x"}}, ErrorCode.FAILED_TO_PARSE),
            ({"$pop": {"a": 1.5}}, ErrorCode.FAILED_TO_PARSE),
            ({"$bit": {"a": 1}}, ErrorCode.BAD_VALUE),
            ({"$bit": {"a": {}}}, ErrorCode.BAD_VALUE),
            ({"$bit": {"a": {"not": 1}}}, ErrorCode.BAD_VALUE),
            ({"$bit": {"a": {"and": 1.0}}}, ErrorCode.BAD_VALUE),
            ({"$currentDate": {"a": 1}}, ErrorCode.BAD_VALUE),
            ({"$currentDate": {"a": {"$type": "string"}}}, ErrorCode.BAD_VALUE),
            ({"$currentDate": {"a": {"x": "date"}}}, ErrorCode.BAD_VALUE),
            ({"$rename": {"a": 1}}, ErrorCode.BAD_VALUE),
            ({"$rename": {"a": "a"}}, ErrorCode.BAD_VALUE),
            ({"$rename": {"a": "a.b"}}, ErrorCode.BAD_VALUE),
            ({"$rename": {"a.b": "a"}}, ErrorCode.BAD_VALUE),
            ({"$rename": {"a.$": "b"}}, ErrorCode.BAD_VALUE),
            ({"$rename": {"a": "b.$[]"}}, ErrorCode.BAD_VALUE),
        ],
    )
    def test_invalid_operator_arguments(self, spec: dict[str, Any], code: ErrorCode) -> None:
        assert compile_error(spec) == code

    def test_replacement_may_not_hold_operators(self) -> None:
        assert compile_error({"a": 1, "$set": {"b": 1}}) == ErrorCode.FAILED_TO_PARSE


class TestArrayFilterValidation:
    def test_identifier_without_filter(self) -> None:
        assert compile_error({"$set": {"a.$[i]": 1}}) == ErrorCode.BAD_VALUE
        assert compile_error({"$set": {"a.$[i]": 1}}, [{"j": 1}]) == ErrorCode.BAD_VALUE

    def test_unused_filter(self) -> None:
        assert compile_error({"$set": {"a": 1}}, [{"i": 1}]) == ErrorCode.FAILED_TO_PARSE
        assert compile_error({"a": 1}, [{"i": 1}]) == ErrorCode.FAILED_TO_PARSE

    @pytest.mark.parametrize(
        ("filters", "code"),
        [
            ([{"I": 1}], ErrorCode.BAD_VALUE),
            ([{"1i": 1}], ErrorCode.BAD_VALUE),
            ([{"a-b": 1}], ErrorCode.BAD_VALUE),
            ([{}], ErrorCode.FAILED_TO_PARSE),
            ([{"i": 1, "j": 2}], ErrorCode.FAILED_TO_PARSE),
            ([{"i": 1}, {"i.x": 2}], ErrorCode.FAILED_TO_PARSE),
            ([1], ErrorCode.TYPE_MISMATCH),
        ],
    )
    def test_invalid_filters(self, filters: list[Any], code: ErrorCode) -> None:
        assert compile_error({"$set": {"a.$[i]": 1}}, filters) == code

    def test_identifier_from_logical_operators(self) -> None:
        update = compile_update(
            {"$set": {"a.$[i]": 0}}, array_filters=[{"$or": [{"i": 1}, {"i": {"$gt": 5}}]}]
        )
        assert update.apply({"a": [1, 2, 9]})[0] == {"a": [0, 2, 0]}

    def test_filter_with_several_conditions_on_one_identifier(self) -> None:
        new = apply(
            {"$set": {"a.$[e].ok": True}},
            {"a": [{"x": 1, "y": 1}, {"x": 1, "y": 2}]},
            array_filters=[{"e.x": 1, "e.y": 2}],
        )
        assert new == {"a": [{"x": 1, "y": 1}, {"x": 1, "y": 2, "ok": True}]}


# ----------------------------------------------------------------------------------
# $set / $unset and paths.


class TestSet:
    def test_new_field_is_appended(self) -> None:
        assert_same(apply({"$set": {"b": 2}}, {"_id": 1, "a": 1}), {"_id": 1, "a": 1, "b": 2})

    def test_existing_field_keeps_its_place(self) -> None:
        assert_same(apply({"$set": {"a": 5}}, {"a": 1, "b": 2}), {"a": 5, "b": 2})

    def test_new_fields_are_created_in_lexicographic_order(self) -> None:
        assert list(apply({"$set": {"z": 1, "b": 1, "a": 1}}, {"_id": 0})) == ["_id", "a", "b", "z"]

    def test_missing_intermediate_documents_are_created(self) -> None:
        assert_same(apply({"$set": {"a.b.c": 1}}, {}), {"a": {"b": {"c": 1}}})
        assert_same(apply({"$set": {"a.b.c": 1}}, {"a": {"x": 0}}), {"a": {"x": 0, "b": {"c": 1}}})

    def test_numeric_component_on_missing_path_creates_a_document(self) -> None:
        assert_same(apply({"$set": {"a.0": 1}}, {}), {"a": {"0": 1}})
        assert_same(apply({"$set": {"a.0": 1}}, {"a": {}}), {"a": {"0": 1}})

    def test_array_index(self) -> None:
        assert_same(apply({"$set": {"a.1": 9}}, {"a": [1, 2, 3]}), {"a": [1, 9, 3]})
        assert_same(apply({"$set": {"a.0.b": 9}}, {"a": [{"b": 1}]}), {"a": [{"b": 9}]})

    def test_array_index_past_the_end_pads_with_nulls(self) -> None:
        assert_same(apply({"$set": {"a.3": 9}}, {"a": [1, 2]}), {"a": [1, 2, None, 9]})

    def test_array_indexes_are_applied_in_numeric_order(self) -> None:
        new = apply({"$set": {"a.10": 10, "a.9": 9, "a.2": 2}}, {"a": []})
        assert_same(new, {"a": [None, None, 2, None, None, None, None, None, None, 9, 10]})

    def test_index_into_array_creates_documents_below(self) -> None:
        assert_same(apply({"$set": {"a.2.b": 1}}, {"a": [0]}), {"a": [0, None, {"b": 1}]})

    def test_arrays_of_arrays(self) -> None:
        assert_same(apply({"$set": {"a.1.0": "x"}}, {"a": [[1], [2, 3]]}), {"a": [[1], ["x", 3]]})

    def test_traversing_a_scalar_is_path_not_viable(self) -> None:
        assert apply_error({"$set": {"a.b": 1}}, {"a": 5}) == ErrorCode.PATH_NOT_VIABLE
        assert apply_error({"$set": {"a.b.c": 1}}, {"a": {"b": "x"}}) == ErrorCode.PATH_NOT_VIABLE
        assert apply_error({"$set": {"a.b": 1}}, {"a": None}) == ErrorCode.PATH_NOT_VIABLE

    def test_field_name_into_an_array_is_path_not_viable(self) -> None:
        doc = {"a": [{"b": 1}, {"b": 2}]}
        assert apply_error({"$set": {"a.b": 1}}, doc) == ErrorCode.PATH_NOT_VIABLE

    def test_path_not_viable_message(self) -> None:
        with pytest.raises(LauraError) as info:
            apply({"$set": {"a.b": 1}}, {"a": 5})
        assert info.value.message == "Cannot create field 'b' in element {a: 5}"

    def test_same_value_is_not_a_modification(self) -> None:
        doc = {"_id": 1, "a": {"b": [1, 2]}, "c": "x"}
        new, changed = compile_update({"$set": {"a": {"b": [1, 2]}, "c": "x"}}).apply(doc)
        assert not changed and new is doc

    def test_value_of_another_type_is_a_modification(self) -> None:
        assert modified({"$set": {"a": 1.0}}, {"a": 1})
        assert modified({"$set": {"a": Int64(1)}}, {"a": 1})
        assert modified({"$set": {"a": {"y": 1, "x": 1}}}, {"a": {"x": 1, "y": 1}})

    def test_null_versus_missing(self) -> None:
        assert_same(apply({"$set": {"a": None}}, {}), {"a": None})
        assert not modified({"$set": {"a": None}}, {"a": None})
        assert modified({"$set": {"a": None}}, {"b": 1})

    def test_result_does_not_alias_the_update_argument(self) -> None:
        update = compile_update({"$set": {"a": {"b": [1]}}})
        first, _ = update.apply({})
        first["a"]["b"].append(2)
        second, _ = update.apply({})
        assert second == {"a": {"b": [1]}}

    def test_special_values(self) -> None:
        values = [
            Decimal128("1.5"),
            datetime.datetime(2020, 1, 1),
            ObjectId(),
            Timestamp(1, 2),
            Regex("^a", "i"),
            b"bin",
        ]
        for value in values:
            assert_same(apply({"$set": {"v": value}}, {}), {"v": value})


class TestUnset:
    def test_removes_fields(self) -> None:
        assert_same(apply({"$unset": {"a": "", "b.c": 1}}, {"a": 1, "b": {"c": 1, "d": 2}}), {"b": {"d": 2}})

    def test_missing_field_is_a_no_op(self) -> None:
        doc = {"a": 1}
        new, changed = compile_update({"$unset": {"b": 1, "a.x": 1, "c.d": 1}}).apply(doc)
        assert new is doc and not changed

    def test_array_element_becomes_null(self) -> None:
        assert_same(apply({"$unset": {"a.1": 1}}, {"a": [1, 2, 3]}), {"a": [1, None, 3]})
        assert_same(apply({"$unset": {"a.5": 1}}, {"a": [1]}), {"a": [1]})

    def test_through_scalars_and_arrays_is_a_no_op(self) -> None:
        assert not modified({"$unset": {"a.b": 1}}, {"a": 5})
        assert not modified({"$unset": {"a.b": 1}}, {"a": [{"b": 1}]})

    def test_empty_document_remains(self) -> None:
        assert_same(apply({"$unset": {"a.b": 1}}, {"a": {"b": 1}}), {"a": {}})


# ----------------------------------------------------------------------------------
# Arithmetic.


class TestIncMul:
    def test_int32(self) -> None:
        assert_same(apply({"$inc": {"a": 2}}, {"a": 1}), {"a": 3})
        assert_same(apply({"$inc": {"a": -5}}, {"a": 1}), {"a": -4})

    def test_int32_overflow_widens_to_int64(self) -> None:
        new = apply({"$inc": {"a": 1}}, {"a": 2**31 - 1})
        assert_same(new, {"a": Int64(2**31)})
        assert_same(apply({"$mul": {"a": 2**20}}, {"a": 2**20}), {"a": Int64(2**40)})
        assert_same(apply({"$inc": {"a": -1}}, {"a": -(2**31)}), {"a": Int64(-(2**31) - 1)})

    def test_int64_stays_int64(self) -> None:
        assert_same(apply({"$inc": {"a": 1}}, {"a": Int64(5)}), {"a": Int64(6)})
        assert_same(apply({"$inc": {"a": Int64(1)}}, {"a": 5}), {"a": Int64(6)})

    def test_int64_overflow_is_an_error(self) -> None:
        assert apply_error({"$inc": {"a": 1}}, {"_id": 1, "a": Int64(2**63 - 1)}) == ErrorCode.BAD_VALUE
        assert apply_error({"$mul": {"a": Int64(2**62)}}, {"a": 4}) == ErrorCode.BAD_VALUE
        with pytest.raises(LauraError) as info:
            apply({"$inc": {"a": 1}}, {"_id": 1, "a": Int64(2**63 - 1)})
        assert "Failed to apply $inc operations to current value" in info.value.message

    def test_doubles(self) -> None:
        assert_same(apply({"$inc": {"a": 0.5}}, {"a": 1}), {"a": 1.5})
        assert_same(apply({"$inc": {"a": 1}}, {"a": 1.5}), {"a": 2.5})
        assert_same(apply({"$mul": {"a": 2}}, {"a": Int64(3)}), {"a": Int64(6)})
        assert_same(apply({"$mul": {"a": 2.0}}, {"a": Int64(3)}), {"a": 6.0})

    def test_decimal128(self) -> None:
        assert_same(apply({"$inc": {"a": 1}}, {"a": Decimal128("1.5")}), {"a": Decimal128("2.5")})
        assert_same(apply({"$inc": {"a": Decimal128("0.1")}}, {"a": 2}), {"a": Decimal128("2.1")})
        # A double joins decimal arithmetic rounded to 15 significant digits.
        assert_same(
            apply({"$inc": {"a": 0.1}}, {"a": Decimal128("1")}),
            {"a": Decimal128("1.100000000000000")},
        )
        assert_same(
            apply({"$mul": {"a": Decimal128("2")}}, {"a": Int64(3)}), {"a": Decimal128("6")}
        )

    def test_missing_field(self) -> None:
        assert_same(apply({"$inc": {"a": Int64(5)}}, {}), {"a": Int64(5)})
        assert_same(apply({"$inc": {"a.b": 2.5}}, {}), {"a": {"b": 2.5}})
        assert_same(apply({"$mul": {"a": 5}}, {}), {"a": 0})
        assert_same(apply({"$mul": {"a": Int64(5)}}, {}), {"a": Int64(0)})
        assert_same(apply({"$mul": {"a": 2.5}}, {}), {"a": 0.0})
        assert_same(apply({"$mul": {"a": Decimal128("2.5")}}, {}), {"a": Decimal128("0.0")})

    def test_non_numeric_field_is_a_type_mismatch(self) -> None:
        assert apply_error({"$inc": {"a": 1}}, {"_id": 1, "a": "x"}) == ErrorCode.TYPE_MISMATCH
        assert apply_error({"$inc": {"a": 1}}, {"a": None}) == ErrorCode.TYPE_MISMATCH
        assert apply_error({"$mul": {"a": 1}}, {"a": [1]}) == ErrorCode.TYPE_MISMATCH
        assert apply_error({"$inc": {"a": 1}}, {"a": True}) == ErrorCode.TYPE_MISMATCH

    def test_identity_is_not_a_modification(self) -> None:
        assert not modified({"$inc": {"a": 0}}, {"a": 7})
        assert not modified({"$mul": {"a": 1}}, {"a": 7})
        assert modified({"$inc": {"a": 0.0}}, {"a": 7})  # int -> double
        assert modified({"$mul": {"a": 1}}, {"a": 2**31 - 1}) is False

    def test_inc_into_arrays(self) -> None:
        assert_same(apply({"$inc": {"a.1": 5}}, {"a": [1, 2]}), {"a": [1, 7]})
        assert apply_error({"$inc": {"a.b": 5}}, {"a": [1, 2]}) == ErrorCode.PATH_NOT_VIABLE


class TestMinMax:
    def test_numbers_of_mixed_types(self) -> None:
        assert_same(apply({"$min": {"a": 2.5}}, {"a": 3}), {"a": 2.5})
        assert_same(apply({"$max": {"a": Int64(4)}}, {"a": 3.5}), {"a": Int64(4)})
        assert_same(apply({"$max": {"a": Decimal128("3.6")}}, {"a": 3.5}), {"a": Decimal128("3.6")})
        assert not modified({"$min": {"a": 5}}, {"a": 3})
        assert not modified({"$max": {"a": 1.0}}, {"a": 1})  # equal values: no change

    def test_missing_field_takes_the_value(self) -> None:
        assert_same(apply({"$min": {"a": 5}}, {}), {"a": 5})
        assert_same(apply({"$max": {"a.b": None}}, {}), {"a": {"b": None}})

    def test_bson_type_order(self) -> None:
        # null < numbers < strings < objects < arrays < ... < dates
        assert_same(apply({"$min": {"a": None}}, {"a": 5}), {"a": None})
        assert_same(apply({"$max": {"a": "s"}}, {"a": 5}), {"a": "s"})
        assert not modified({"$max": {"a": 5}}, {"a": "s"})
        date = datetime.datetime(2021, 1, 1)
        assert_same(apply({"$max": {"a": date}}, {"a": datetime.datetime(2020, 1, 1)}), {"a": date})

    def test_through_scalar(self) -> None:
        assert apply_error({"$max": {"a.b": 1}}, {"a": 1}) == ErrorCode.PATH_NOT_VIABLE


class TestCurrentDate:
    def test_date_and_timestamp(self) -> None:
        new = apply(
            {"$currentDate": {"d": True, "e": False, "f": {"$type": "date"}, "t": {"$type": "timestamp"}}},
            {},
            now=NOW,
        )
        assert new["d"] == new["e"] == new["f"] == NOW
        assert isinstance(new["t"], Timestamp)
        assert new["t"].time == int(NOW.replace(tzinfo=datetime.UTC).timestamp())

    def test_uses_the_clock_with_millisecond_precision(self) -> None:
        before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        new = apply({"$currentDate": {"d": True}}, {})
        assert isinstance(new["d"], datetime.datetime) and new["d"].tzinfo is None
        assert new["d"].microsecond % 1000 == 0
        assert new["d"] >= before.replace(microsecond=before.microsecond // 1000 * 1000)

    def test_aware_clock_is_converted_to_naive_utc(self) -> None:
        tz = datetime.timezone(datetime.timedelta(hours=2))
        new = apply({"$currentDate": {"d": True}}, {}, now=datetime.datetime(2024, 1, 1, 12, tzinfo=tz))
        assert new["d"] == datetime.datetime(2024, 1, 1, 10)

    def test_same_date_is_not_a_modification(self) -> None:
        assert not modified({"$currentDate": {"d": True}}, {"d": NOW}, now=NOW)


# ----------------------------------------------------------------------------------
# Arrays.


class TestPush:
    def test_push_and_create(self) -> None:
        assert_same(apply({"$push": {"a": 3}}, {"a": [1, 2]}), {"a": [1, 2, 3]})
        assert_same(apply({"$push": {"a": 3}}, {}), {"a": [3]})
        assert_same(apply({"$push": {"a.b": [1]}}, {}), {"a": {"b": [[1]]}})

    def test_push_document_without_each(self) -> None:
        assert_same(apply({"$push": {"a": {"x": 1}}}, {"a": []}), {"a": [{"x": 1}]})

    def test_push_onto_non_array_is_bad_value(self) -> None:
        assert apply_error({"$push": {"a": 1}}, {"_id": 1, "a": 5}) == ErrorCode.BAD_VALUE
        assert apply_error({"$push": {"a": 1}}, {"a": {"b": 1}}) == ErrorCode.BAD_VALUE
        assert apply_error({"$push": {"a": 1}}, {"a": None}) == ErrorCode.BAD_VALUE

    def test_each(self) -> None:
        assert_same(apply({"$push": {"a": {"$each": [3, 4]}}}, {"a": [1]}), {"a": [1, 3, 4]})
        assert not modified({"$push": {"a": {"$each": []}}}, {"a": [1]})
        assert_same(apply({"$push": {"a": {"$each": []}}}, {}), {"a": []})

    @pytest.mark.parametrize(
        ("position", "expected"),
        [
            (0, [8, 9, 1, 2, 3]),
            (1, [1, 8, 9, 2, 3]),
            (3, [1, 2, 3, 8, 9]),
            (10, [1, 2, 3, 8, 9]),
            (-1, [1, 2, 8, 9, 3]),
            (-3, [8, 9, 1, 2, 3]),
            (-10, [8, 9, 1, 2, 3]),
        ],
    )
    def test_position(self, position: int, expected: list[int]) -> None:
        spec = {"$push": {"a": {"$each": [8, 9], "$position": position}}}
        assert_same(apply(spec, {"a": [1, 2, 3]}), {"a": expected})

    @pytest.mark.parametrize(
        ("slice_", "expected"),
        [(0, []), (2, [1, 2]), (-2, [3, 4]), (10, [1, 2, 3, 4]), (-10, [1, 2, 3, 4])],
    )
    def test_slice(self, slice_: int, expected: list[int]) -> None:
        spec = {"$push": {"a": {"$each": [4], "$slice": slice_}}}
        assert_same(apply(spec, {"a": [1, 2, 3]}), {"a": expected})

    def test_slice_accepts_integral_doubles(self) -> None:
        spec = {"$push": {"a": {"$each": [4], "$slice": -1.0}}}
        assert_same(apply(spec, {"a": [1]}), {"a": [4]})

    def test_sort_whole_elements(self) -> None:
        spec = {"$push": {"a": {"$each": [3, "x", None, 1.5], "$sort": 1}}}
        assert_same(apply(spec, {"a": [2]}), {"a": [None, 1.5, 2, 3, "x"]})
        spec = {"$push": {"a": {"$each": [3, 1], "$sort": -1}}}
        assert_same(apply(spec, {"a": [2]}), {"a": [3, 2, 1]})

    def test_sort_subdocuments_by_fields(self) -> None:
        docs = [{"n": "b", "s": 1}, {"n": "a", "s": 2}, {"n": "c", "s": 1}, {"s": 0}]
        spec = {"$push": {"a": {"$each": docs, "$sort": {"s": -1, "n": 1}}}}
        assert_same(
            apply(spec, {"a": []}),
            {"a": [{"n": "a", "s": 2}, {"n": "b", "s": 1}, {"n": "c", "s": 1}, {"s": 0}]},
        )

    def test_sort_by_nested_field_missing_sorts_as_null(self) -> None:
        spec = {"$push": {"a": {"$each": [], "$sort": {"x.y": 1}}}}
        doc = {"a": [{"x": {"y": 2}}, {"x": {}}, 5, {"x": {"y": 1}}]}
        assert_same(apply(spec, doc), {"a": [{"x": {}}, 5, {"x": {"y": 1}}, {"x": {"y": 2}}]})

    def test_sort_then_slice(self) -> None:
        spec = {"$push": {"a": {"$each": [5, 1], "$sort": 1, "$slice": 2}}}
        assert_same(apply(spec, {"a": [3, 4]}), {"a": [1, 3]})

    def test_sorted_array_left_unchanged_is_not_a_modification(self) -> None:
        assert not modified({"$push": {"a": {"$each": [], "$sort": 1}}}, {"a": [1, 2]})
        assert modified({"$push": {"a": {"$each": [], "$sort": 1}}}, {"a": [2, 1]})

    def test_push_into_nested_arrays(self) -> None:
        assert_same(apply({"$push": {"a.1": 9}}, {"a": [[1], [2]]}), {"a": [[1], [2, 9]]})


class TestAddToSet:
    def test_adds_missing_values_only(self) -> None:
        assert_same(apply({"$addToSet": {"a": 3}}, {"a": [1, 2]}), {"a": [1, 2, 3]})
        assert not modified({"$addToSet": {"a": 2}}, {"a": [1, 2]})
        assert not modified({"$addToSet": {"a": 2.0}}, {"a": [1, 2]})  # numbers by value

    def test_each_is_deduplicated(self) -> None:
        spec = {"$addToSet": {"a": {"$each": [3, 1, 3, 4.0, 4]}}}
        assert_same(apply(spec, {"a": [1]}), {"a": [1, 3, 4.0]})

    def test_documents_compare_with_field_order(self) -> None:
        spec = {"$addToSet": {"a": {"y": 1, "x": 1}}}
        assert_same(apply(spec, {"a": [{"x": 1, "y": 1}]}), {"a": [{"x": 1, "y": 1}, {"y": 1, "x": 1}]})

    def test_arrays_as_values(self) -> None:
        assert_same(apply({"$addToSet": {"a": [1]}}, {"a": [1]}), {"a": [1, [1]]})
        assert not modified({"$addToSet": {"a": [1]}}, {"a": [[1]]})

    def test_missing_and_non_array(self) -> None:
        assert_same(apply({"$addToSet": {"a": {"$each": [1, 1]}}}, {}), {"a": [1]})
        assert apply_error({"$addToSet": {"a": 1}}, {"a": 1}) == ErrorCode.BAD_VALUE


class TestPull:
    def test_equal_values(self) -> None:
        assert_same(apply({"$pull": {"a": 2}}, {"a": [1, 2, 2.0, 3]}), {"a": [1, 3]})
        assert_same(apply({"$pull": {"a": [1]}}, {"a": [[1], [1, 2], 1]}), {"a": [[1, 2], 1]})
        assert_same(apply({"$pull": {"a": None}}, {"a": [None, 1]}), {"a": [1]})

    def test_condition(self) -> None:
        assert_same(apply({"$pull": {"a": {"$gte": 3}}}, {"a": [1, 5, 3, 2]}), {"a": [1, 2]})
        assert_same(
            apply({"$pull": {"a": {"$in": ["x", 2]}}}, {"a": ["x", 1, 2, "y"]}), {"a": [1, "y"]}
        )
        assert_same(apply({"$pull": {"a": Regex("^a")}}, {"a": ["ab", "b", 1]}), {"a": ["b", 1]})

    def test_query_on_subdocuments(self) -> None:
        doc = {"a": [{"x": 1, "y": 2}, {"x": 2}, 1, {"x": 1}]}
        assert_same(apply({"$pull": {"a": {"x": 1}}}, doc), {"a": [{"x": 2}, 1]})
        doc = {"a": [{"q": 5, "s": "x"}, {"q": 1, "s": "x"}]}
        assert_same(apply({"$pull": {"a": {"q": {"$gt": 2}, "s": "x"}}}, doc), {"a": [{"q": 1, "s": "x"}]})

    def test_empty_query_pulls_every_subdocument(self) -> None:
        assert_same(apply({"$pull": {"a": {}}}, {"a": [{"x": 1}, 1, {}]}), {"a": [1]})

    def test_elem_match_on_nested_arrays(self) -> None:
        doc = {"a": [[1, 2], [3, 4]]}
        assert_same(apply({"$pull": {"a": {"$elemMatch": {"$gte": 4}}}}, doc), {"a": [[1, 2]]})

    def test_missing_and_errors(self) -> None:
        assert not modified({"$pull": {"a": 1}}, {"b": 1})
        assert not modified({"$pull": {"a.b": 1}}, {"a": {}})
        assert not modified({"$pull": {"a": 9}}, {"a": [1]})
        assert apply_error({"$pull": {"a": 1}}, {"a": 1}) == ErrorCode.BAD_VALUE
        assert apply_error({"$pull": {"a.b": 1}}, {"a": 1}) == ErrorCode.PATH_NOT_VIABLE

    def test_pull_all(self) -> None:
        assert_same(apply({"$pullAll": {"a": [1, "x"]}}, {"a": [1, 2, "x", 1.0]}), {"a": [2]})
        assert not modified({"$pullAll": {"a": []}}, {"a": [1]})
        assert apply_error({"$pullAll": {"a": [1]}}, {"a": "s"}) == ErrorCode.BAD_VALUE


class TestPop:
    def test_pop_last_and_first(self) -> None:
        assert_same(apply({"$pop": {"a": 1}}, {"a": [1, 2, 3]}), {"a": [1, 2]})
        assert_same(apply({"$pop": {"a": -1}}, {"a": [1, 2, 3]}), {"a": [2, 3]})
        assert_same(apply({"$pop": {"a": 1.0}}, {"a": [1]}), {"a": []})

    def test_empty_and_missing(self) -> None:
        assert not modified({"$pop": {"a": 1}}, {"a": []})
        assert not modified({"$pop": {"a": 1}}, {})
        assert not modified({"$pop": {"a.2.b": 1}}, {"a": [{"b": [1]}]})

    def test_errors(self) -> None:
        assert apply_error({"$pop": {"a": 1}}, {"a": 1}) == ErrorCode.TYPE_MISMATCH
        assert apply_error({"$pop": {"a.b": 1}}, {"a": 1}) == ErrorCode.PATH_NOT_VIABLE


class TestBit:
    def test_int32(self) -> None:
        assert_same(apply({"$bit": {"a": {"and": 6}}}, {"a": 3}), {"a": 2})
        assert_same(apply({"$bit": {"a": {"or": 4}}}, {"a": 3}), {"a": 7})
        assert_same(apply({"$bit": {"a": {"xor": 1}}}, {"a": 3}), {"a": 2})
        assert_same(apply({"$bit": {"a": {"and": 7, "xor": 8}}}, {"a": 5}), {"a": 13})

    def test_int64(self) -> None:
        assert_same(apply({"$bit": {"a": {"or": Int64(2**40)}}}, {"a": 1}), {"a": Int64(2**40 + 1)})
        assert_same(apply({"$bit": {"a": {"and": 1}}}, {"a": Int64(3)}), {"a": Int64(1)})

    def test_missing_starts_from_zero(self) -> None:
        assert_same(apply({"$bit": {"a": {"or": 5}}}, {}), {"a": 5})
        assert_same(apply({"$bit": {"a": {"and": 5}}}, {}), {"a": 0})

    def test_non_integer_field(self) -> None:
        assert apply_error({"$bit": {"a": {"or": 1}}}, {"a": 1.0}) == ErrorCode.BAD_VALUE
        assert apply_error({"$bit": {"a": {"or": 1}}}, {"a": "1"}) == ErrorCode.BAD_VALUE

    def test_no_op(self) -> None:
        assert not modified({"$bit": {"a": {"or": 1}}}, {"a": 1})


class TestRename:
    def test_moves_to_the_end(self) -> None:
        assert_same(apply({"$rename": {"a": "z"}}, {"_id": 1, "a": 1, "b": 2}), {"_id": 1, "b": 2, "z": 1})

    def test_overwrites_an_existing_target_in_place(self) -> None:
        doc = {"_id": 1, "b": 0, "a": {"x": 1}, "c": 3}
        assert_same(apply({"$rename": {"a": "b"}}, doc), {"_id": 1, "b": {"x": 1}, "c": 3})

    def test_nested_source_and_target(self) -> None:
        doc = {"a": {"b": 1, "c": 2}}
        assert_same(apply({"$rename": {"a.b": "x.y"}}, doc), {"a": {"c": 2}, "x": {"y": 1}})

    def test_missing_source_is_a_no_op(self) -> None:
        doc = {"a": [1]}
        new, changed = compile_update({"$rename": {"b": "c", "x.y": "a.z"}}).apply(doc)
        assert new is doc and not changed

    def test_source_or_target_in_an_array(self) -> None:
        assert apply_error({"$rename": {"a.0": "b"}}, {"a": [1]}) == ErrorCode.BAD_VALUE
        assert apply_error({"$rename": {"a.0.x": "b"}}, {"a": [{"x": 1}]}) == ErrorCode.BAD_VALUE
        assert apply_error({"$rename": {"b": "a.0"}}, {"a": [1], "b": 1}) == ErrorCode.BAD_VALUE
        assert apply_error({"$rename": {"b": "a.x"}}, {"a": [1], "b": 1}) == ErrorCode.BAD_VALUE

    def test_source_through_a_scalar(self) -> None:
        assert apply_error({"$rename": {"a.b": "c"}}, {"a": 5}) == ErrorCode.PATH_NOT_VIABLE

    def test_target_through_a_scalar(self) -> None:
        assert apply_error({"$rename": {"b": "a.c"}}, {"a": 5, "b": 1}) == ErrorCode.PATH_NOT_VIABLE

    def test_same_value_target(self) -> None:
        assert_same(apply({"$rename": {"a": "b"}}, {"a": 1, "b": 1.0}), {"b": 1.0})

    def test_combined_with_other_operators(self) -> None:
        doc = {"_id": 0, "a": 1, "n": 1}
        new = apply({"$rename": {"a": "r"}, "$inc": {"n": 1}, "$set": {"b": 2}}, doc)
        assert_same(new, {"_id": 0, "n": 2, "b": 2, "r": 1})


class TestSetOnInsert:
    def test_only_on_insert(self) -> None:
        spec = {"$setOnInsert": {"a": 1}, "$set": {"b": 1}}
        assert_same(apply(spec, {"_id": 1}), {"_id": 1, "b": 1})
        assert_same(apply(spec, {"_id": 1}, is_insert=True), {"_id": 1, "a": 1, "b": 1})

    def test_ignored_even_on_unviable_paths_when_not_inserting(self) -> None:
        assert not modified({"$setOnInsert": {"a.b": 1}}, {"a": 5})


# ----------------------------------------------------------------------------------
# Positional operators and arrayFilters.


class TestPositional:
    def test_positional(self) -> None:
        doc = {"a": [{"b": 1}, {"b": 2}]}
        assert_same(apply({"$set": {"a.$.b": 9}}, doc, position=1), {"a": [{"b": 1}, {"b": 9}]})
        assert_same(apply({"$inc": {"a.$": 1}}, {"a": [1, 2]}, position=0), {"a": [2, 2]})

    def test_position_required(self) -> None:
        assert apply_error({"$set": {"a.$": 1}}, {"a": [1]}) == ErrorCode.BAD_VALUE
        assert compile_update({"$set": {"a.$": 1}}).needs_position
        assert not compile_update({"$set": {"a.0": 1}}).needs_position

    def test_positional_beside_other_indexes(self) -> None:
        doc = {"a": [0, 0, 0]}
        new = apply({"$set": {"a.$": 1, "a.2": 2}}, doc, position=0)
        assert_same(new, {"a": [1, 0, 2]})

    def test_positional_merging_with_the_same_index(self) -> None:
        doc = {"a": [{"x": 0}, {"x": 0}]}
        new = apply({"$set": {"a.$.y": 1, "a.1.z": 2}}, doc, position=1)
        assert_same(new, {"a": [{"x": 0}, {"x": 0, "y": 1, "z": 2}]})
        code = apply_error({"$set": {"a.$": 1, "a.1": 2}}, doc, position=1)
        assert code == ErrorCode.CONFLICTING_UPDATE_OPERATORS

    def test_positional_with_pull_and_push(self) -> None:
        doc = {"a": [{"t": [1, 2]}, {"t": [3]}]}
        assert_same(apply({"$pull": {"a.$.t": 3}}, doc, position=1), {"a": [{"t": [1, 2]}, {"t": []}]})
        assert_same(apply({"$push": {"a.$.t": 4}}, doc, position=0), {"a": [{"t": [1, 2, 4]}, {"t": [3]}]})


class TestAllElements:
    def test_all_elements(self) -> None:
        assert_same(apply({"$inc": {"a.$[]": 1}}, {"a": [1, 2]}), {"a": [2, 3]})
        assert_same(
            apply({"$set": {"a.$[].b": 0}}, {"a": [{"b": 1}, {}]}), {"a": [{"b": 0}, {"b": 0}]}
        )
        assert not modified({"$set": {"a.$[]": 0}}, {"a": []})

    def test_nested(self) -> None:
        doc = {"a": [{"b": [1, 2]}, {"b": [3]}]}
        assert_same(apply({"$mul": {"a.$[].b.$[]": 10}}, doc), {"a": [{"b": [10, 20]}, {"b": [30]}]})

    def test_missing_or_non_array(self) -> None:
        assert apply_error({"$set": {"a.$[]": 1}}, {}) == ErrorCode.BAD_VALUE
        assert apply_error({"$set": {"a.$[]": 1}}, {"a": {"0": 1}}) == ErrorCode.BAD_VALUE
        assert apply_error({"$set": {"a.b.$[]": 1}}, {"a": 5}) == ErrorCode.BAD_VALUE

    def test_unset_all_elements(self) -> None:
        assert_same(apply({"$unset": {"a.$[]": 1}}, {"a": [1, 2]}), {"a": [None, None]})


class TestArrayFilters:
    def test_simple_filter(self) -> None:
        new = apply({"$set": {"a.$[x]": 0}}, {"a": [1, 5, 2, 8]}, array_filters=[{"x": {"$gt": 4}}])
        assert_same(new, {"a": [1, 0, 2, 0]})

    def test_filter_on_subdocument_fields(self) -> None:
        doc = {"g": [{"s": 80, "m": 1}, {"s": 95, "m": 1}]}
        new = apply({"$inc": {"g.$[e].m": 1}}, doc, array_filters=[{"e.s": {"$gte": 90}}])
        assert_same(new, {"g": [{"s": 80, "m": 1}, {"s": 95, "m": 2}]})

    def test_several_filters_and_nested_arrays(self) -> None:
        doc = {"a": [{"k": 1, "b": [1, 3, 5]}, {"k": 2, "b": [9, 1]}]}
        new = apply(
            {"$set": {"a.$[i].b.$[j]": 0}},
            doc,
            array_filters=[{"i.k": 1}, {"j": {"$gt": 2}}],
        )
        assert_same(new, {"a": [{"k": 1, "b": [1, 0, 0]}, {"k": 2, "b": [9, 1]}]})

    def test_two_filters_on_one_array_disjoint(self) -> None:
        doc = {"a": [1, 2, 3, 4]}
        new = apply(
            {"$set": {"a.$[lo]": "lo", "a.$[hi]": "hi"}},
            doc,
            array_filters=[{"lo": {"$lt": 2}}, {"hi": {"$gt": 3}}],
        )
        assert_same(new, {"a": ["lo", 2, 3, "hi"]})

    def test_two_filters_matching_one_element_conflict(self) -> None:
        code = apply_error(
            {"$set": {"a.$[i]": 1, "a.$[j]": 2}},
            {"a": [0]},
            array_filters=[{"i": 0}, {"j": 0}],
        )
        assert code == ErrorCode.CONFLICTING_UPDATE_OPERATORS

    def test_filters_on_different_subfields_merge(self) -> None:
        doc = {"a": [{"x": 1}, {"x": 2}]}
        new = apply(
            {"$set": {"a.$[].seen": True, "a.$[two].big": True}},
            doc,
            array_filters=[{"two.x": 2}],
        )
        assert_same(new, {"a": [{"x": 1, "seen": True}, {"x": 2, "big": True, "seen": True}]})

    def test_nested_conflict_only_where_filters_overlap(self) -> None:
        doc = {"a": [{"x": 0, "b": [{"y": 0, "c": 0}]}, {"x": 1, "b": [{"y": 0, "c": 0}]}]}
        spec = {"$set": {"a.$[i].b.$[k].c": 1, "a.$[j].b.$[k].c": 2}}
        code = apply_error(spec, doc, array_filters=[{"i.x": 0}, {"j.x": 0}, {"k.y": 0}])
        assert code == ErrorCode.CONFLICTING_UPDATE_OPERATORS
        new = apply(spec, doc, array_filters=[{"i.x": 0}, {"j.x": 1}, {"k.y": 0}])
        assert_same(new, {"a": [{"x": 0, "b": [{"y": 0, "c": 1}]}, {"x": 1, "b": [{"y": 0, "c": 2}]}]})

    def test_filter_with_null_and_missing(self) -> None:
        doc = {"a": [{"v": None}, {}, {"v": 1}]}
        new = apply({"$set": {"a.$[e].hit": 1}}, doc, array_filters=[{"e.v": None}])
        assert_same(new, {"a": [{"v": None, "hit": 1}, {"hit": 1}, {"v": 1}]})

    def test_no_match_is_not_a_modification(self) -> None:
        update = compile_update({"$set": {"a.$[x]": 0}}, array_filters=[{"x": 99}])
        doc = {"a": [1, 2]}
        assert update.apply(doc) == (doc, False)
        assert update.has_array_filters

    def test_filters_with_push_and_pull(self) -> None:
        doc = {"a": [{"n": 1, "t": [1]}, {"n": 2, "t": [2]}]}
        new = apply(
            {"$push": {"a.$[p].t": 9}, "$pull": {"a.$[q].t": 2}},
            doc,
            array_filters=[{"p.n": 1}, {"q.n": 2}],
        )
        assert_same(new, {"a": [{"n": 1, "t": [1, 9]}, {"n": 2, "t": []}]})


# ----------------------------------------------------------------------------------
# _id, replacement, atomicity.


class TestIdImmutability:
    @pytest.mark.parametrize(
        "spec",
        [
            {"$set": {"_id": 2}},
            {"$set": {"_id": 1.0}},
            {"$unset": {"_id": 1}},
            {"$inc": {"_id": 1}},
            {"$rename": {"_id": "x"}},
            {"$rename": {"x": "_id"}},
        ],
    )
    def test_changing_id_is_an_error(self, spec: dict[str, Any]) -> None:
        assert apply_error(spec, {"_id": 1, "x": 5}) == ErrorCode.IMMUTABLE_FIELD

    def test_subfields_of_id(self) -> None:
        assert apply_error({"$set": {"_id.a": 2}}, {"_id": {"a": 1}}) == ErrorCode.IMMUTABLE_FIELD
        assert not modified({"$set": {"_id.a": 1}}, {"_id": {"a": 1}})

    def test_setting_the_same_id_is_fine(self) -> None:
        doc = {"_id": 1, "a": 1}
        assert compile_update({"$set": {"_id": 1, "a": 2}}).apply(doc)[0] == {"_id": 1, "a": 2}

    def test_documents_without_id_may_gain_one(self) -> None:
        assert_same(apply({"$set": {"_id": 3}}, {"a": 1}), {"a": 1, "_id": 3})


class TestReplacement:
    def test_keeps_id_first(self) -> None:
        new, changed = compile_update({"b": 2, "c": [1]}).apply({"_id": 7, "a": 1})
        assert changed
        assert_same(new, {"_id": 7, "b": 2, "c": [1]})

    def test_same_id_in_replacement(self) -> None:
        assert_same(apply({"b": 2, "_id": 7}, {"_id": 7, "a": 1}), {"_id": 7, "b": 2})

    def test_different_id_is_immutable_field(self) -> None:
        assert apply_error({"_id": 8, "b": 2}, {"_id": 7}) == ErrorCode.IMMUTABLE_FIELD

    def test_identical_replacement_is_not_a_modification(self) -> None:
        doc = {"_id": 7, "a": {"b": 1}}
        new, changed = compile_update({"a": {"b": 1}}).apply(doc)
        assert new is doc and not changed

    def test_empty_replacement(self) -> None:
        assert_same(apply({}, {"_id": 1, "a": 1}), {"_id": 1})

    def test_result_does_not_alias_the_replacement(self) -> None:
        update = compile_update({"a": [1]})
        first, _ = update.apply({"_id": 1})
        first["a"].append(2)
        assert update.apply({"_id": 2})[0] == {"_id": 2, "a": [1]}


class TestAtomicity:
    def test_failing_second_operator_leaves_input_unchanged(self) -> None:
        doc = {"_id": 1, "a": {"n": 1}, "s": "text", "l": [1, 2]}
        snapshot = copy.deepcopy(doc)
        update = compile_update({"$set": {"a.m": 1, "z": 0}, "$push": {"l": 3}, "$inc": {"s": 1}})
        with pytest.raises(LauraError) as info:
            update.apply(doc)
        assert info.value.code == ErrorCode.TYPE_MISMATCH
        assert_same(doc, snapshot)

    def test_successful_update_shares_nothing_it_changed(self) -> None:
        doc: dict[str, Any] = {"_id": 1, "a": {"b": {"c": 1}}, "d": {"e": 1}}
        new, _ = compile_update({"$set": {"a.b.x": 2}}).apply(doc)
        assert doc == {"_id": 1, "a": {"b": {"c": 1}}, "d": {"e": 1}}
        assert new["a"] is not doc["a"] and new["a"]["b"] is not doc["a"]["b"]
        assert new["d"] is doc["d"]  # untouched parts are shared


# ----------------------------------------------------------------------------------
# Upserts.


class TestUpsert:
    def test_seeds_from_equality_fields(self) -> None:
        update = compile_update({"$set": {"z": 1}, "$setOnInsert": {"s": 2}})
        new = build_upsert_document({"_id": 5, "a.b": 1, "c": {"$gt": 1}, "d": "x"}, update)
        assert_same(new, {"_id": 5, "a": {"b": 1}, "d": "x", "s": 2, "z": 1})

    def test_generates_an_object_id(self) -> None:
        new = build_upsert_document({"a": 1}, compile_update({"$inc": {"n": 1}}))
        assert list(new) == ["_id", "a", "n"]
        assert isinstance(new["_id"], ObjectId)

    def test_id_set_by_the_update_comes_first(self) -> None:
        new = build_upsert_document({"a": 1}, compile_update({"$set": {"_id": "k"}}))
        assert_same(new, {"_id": "k", "a": 1})

    def test_update_may_not_change_the_filters_id(self) -> None:
        update = compile_update({"$set": {"_id": 2}})
        assert error_code(lambda: build_upsert_document({"_id": 1}, update)) == ErrorCode.IMMUTABLE_FIELD

    def test_replacement_takes_only_the_id_from_the_filter(self) -> None:
        update = compile_update({"x": 1})
        assert_same(build_upsert_document({"_id": 3, "a": 1}, update), {"_id": 3, "x": 1})
        new = build_upsert_document({"a": 1}, update)
        assert list(new) == ["_id", "x"] and isinstance(new["_id"], ObjectId)
        assert_same(build_upsert_document({}, compile_update({"x": 1, "_id": 4})), {"_id": 4, "x": 1})
        assert error_code(
            lambda: build_upsert_document({"_id": 3}, compile_update({"_id": 4}))
        ) == ErrorCode.IMMUTABLE_FIELD

    def test_equality_forms(self) -> None:
        update = compile_update({"$set": {"n": 1}})
        new = build_upsert_document({"$and": [{"a": {"$eq": 2}}, {"b": {"$in": [3]}}]}, update)
        assert_same({k: v for k, v in new.items() if k != "_id"}, {"a": 2, "b": 3, "n": 1})

    def test_update_on_seeded_fields(self) -> None:
        new = build_upsert_document({"_id": 1, "n": 5}, compile_update({"$inc": {"n": 1}}))
        assert_same(new, {"_id": 1, "n": 6})

    def test_current_date_uses_now(self) -> None:
        new = build_upsert_document({"_id": 1}, compile_update({"$currentDate": {"t": True}}), now=NOW)
        assert_same(new, {"_id": 1, "t": NOW})

    def test_path_matched_twice(self) -> None:
        update = compile_update({"$set": {"z": 1}})
        code = error_code(lambda: build_upsert_document({"a": {"b": 1}, "a.c": 2}, update))
        assert code == ErrorCode.BAD_VALUE
        new = build_upsert_document({"a.b": 1, "a.c": 2}, update)
        assert_same(new["a"], {"b": 1, "c": 2})

    def test_positional_cannot_be_used_on_insert(self) -> None:
        update = compile_update({"$set": {"a.$": 1}})
        assert error_code(lambda: build_upsert_document({"a": 1}, update)) == ErrorCode.BAD_VALUE


# ----------------------------------------------------------------------------------
# Introspection.


class TestInputs:
    def test_document_required(self) -> None:
        update = compile_update({"$set": {"a": 1}})
        assert error_code(lambda: update.apply([1])) == ErrorCode.BAD_VALUE  # type: ignore[arg-type]

    def test_dict_subclasses(self) -> None:
        doc = SON([("_id", 1), ("a", SON([("x", 1)]))])
        new, changed = compile_update({"$set": {"a.b": 1}}).apply(doc)
        assert changed and new == {"_id": 1, "a": {"x": 1, "b": 1}}
        assert doc == {"_id": 1, "a": {"x": 1}}

    def test_positional_then_all_elements(self) -> None:
        doc = {"a": [{"b": [1, 2]}, {"b": [3]}]}
        new = apply({"$inc": {"a.$.b.$[]": 10}}, doc, position=1)
        assert_same(new, {"a": [{"b": [1, 2]}, {"b": [13]}]})

    def test_mongodb_messages(self) -> None:
        cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
            (
                {"$inc": {"a": 1}},
                {"_id": 1, "a": "x"},
                "Cannot apply $inc to a value of non-numeric type. {_id: 1} has the field 'a' "
                "of non-numeric type string",
            ),
            (
                {"$push": {"a": 1}},
                {"_id": 1, "a": 5},
                "The field 'a' must be an array but is of type int in document {_id: 1}",
            ),
            (
                {"$set": {"a.$": 1}},
                {"a": [1]},
                "The positional operator did not find the match needed from the query.",
            ),
            (
                {"$set": {"a.$[]": 1}},
                {},
                "The path 'a' must exist in the document in order to apply array updates.",
            ),
            (
                {"$set": {"_id": 2}},
                {"_id": 1},
                "Performing an update on the path '_id' would modify the immutable field '_id'",
            ),
        ]
        for spec, doc, message in cases:
            with pytest.raises(LauraError) as info:
                compile_update(spec).apply(doc)
            assert info.value.message == message

    def test_compile_messages(self) -> None:
        cases: list[tuple[Any, Any, str]] = [
            (
                {"$foo": {"a": 1}},
                None,
                "Unknown modifier: $foo. Expected a valid update modifier or pipeline-style "
                "update specified as an array",
            ),
            (
                {"$set": 1},
                None,
                "Modifiers operate on fields but we found type int instead. For example: "
                "{$mod: {<field>: ...}} not {$set: 1}",
            ),
            (
                {"$set": {"a.$[i]": 1}},
                None,
                "No array filter found for identifier 'i' in path 'a.$[i]'",
            ),
            (
                {"$set": {"a": 1}},
                [{"i": 0}],
                "The array filter for identifier 'i' was not used in the update "
                "{ $set: { a: 1 } }",
            ),
        ]
        for spec, filters, message in cases:
            with pytest.raises(LauraError) as info:
                compile_update(spec, array_filters=filters)
            assert info.value.message == message


class TestIntrospection:
    def test_modified_paths(self) -> None:
        update = compile_update({"$set": {"a.b": 1, "c": 1}, "$rename": {"x.y": "z"}})
        assert modified_paths(update) == ["a", "c", "x", "z"]
        assert modified_paths(compile_update({"a": 1})) == [""]

    def test_may_modify(self) -> None:
        update = compile_update({"$set": {"a.b": 1, "l.$[].x": 1}})
        assert update.may_modify("a")
        assert update.may_modify("a.b.c")
        assert not update.may_modify("a.c")
        assert update.may_modify("l.3.x")
        assert not update.may_modify("l.3.y")
        assert not update.may_modify("b")
        assert compile_update({"a": 1}).may_modify("anything")

    def test_repr(self) -> None:
        assert "a.b" in repr(compile_update({"$set": {"a.b": 1}}))
        assert isinstance(compile_update({"a": 1}), Update)


# ----------------------------------------------------------------------------------
# Properties.

_KEYS = st.sampled_from(["a", "b", "c", "0", "1"])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=True, allow_infinity=False),
    st.text(max_size=3),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_KEYS, children, max_size=3)
    ),
    max_leaves=10,
)
_DOCS = st.dictionaries(_KEYS, _VALUES, max_size=4)
_PATHS = st.lists(_KEYS, min_size=1, max_size=3).map(".".join)
_NUMBERS = st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.integers(-5, 5).map(Int64))
_OPERATIONS = st.one_of(
    st.tuples(st.just("$set"), _PATHS, _VALUES),
    st.tuples(st.just("$unset"), _PATHS, st.just(1)),
    st.tuples(st.sampled_from(["$inc", "$mul"]), _PATHS, _NUMBERS),
    st.tuples(st.sampled_from(["$min", "$max"]), _PATHS, _SCALARS),
    st.tuples(st.sampled_from(["$push", "$addToSet", "$pull"]), _PATHS, _SCALARS),
    st.tuples(st.just("$pop"), _PATHS, st.sampled_from([1, -1])),
    st.tuples(st.just("$rename"), _PATHS, _PATHS),
)


def _read(doc: Any, path: str) -> Any:
    current: Any = doc
    for part in path.split("."):
        if isinstance(current, dict):
            current = current[part]
        else:
            current = current[int(part)]
    return current


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS, operations=st.lists(_OPERATIONS, min_size=1, max_size=4))
def test_apply_never_mutates_its_input(doc: dict[str, Any], operations: list[Any]) -> None:
    spec: dict[str, dict[str, Any]] = {}
    for operator, path, arg in operations:
        spec.setdefault(operator, {})[path] = arg
    try:
        update = compile_update(spec)
    except LauraError:
        return
    snapshot = copy.deepcopy(doc)
    try:
        new, changed = update.apply(doc)
    except LauraError:
        assert identical(doc, snapshot)
        return
    assert identical(doc, snapshot)
    assert changed == (not identical(new, snapshot))


@settings(max_examples=150, deadline=None)
@given(doc=_DOCS, path=_PATHS, value=_VALUES)
def test_set_then_read_returns_the_value(doc: dict[str, Any], path: str, value: Any) -> None:
    try:
        new, _ = compile_update({"$set": {path: value}}).apply(doc)
    except LauraError as exc:
        assert exc.code == ErrorCode.PATH_NOT_VIABLE
        return
    assert identical(_read(new, path), value)
