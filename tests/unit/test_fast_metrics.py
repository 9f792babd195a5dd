"""FastCounter / FastHistogram: plain numbers exposed through a prometheus_client
collector, with the names, labels and values prometheus_client's own metrics give."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lauradb.fast_metrics import FastCounter, FastHistogram

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

BUCKETS = (0.5, 1.0, 2.5, 10.0)

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def samples(registry: CollectorRegistry, *, skip_created: bool = True) -> list[Sample]:
    """Every sample of the registry's text exposition, parsed back, sorted."""
    text = generate_latest(registry).decode()
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if skip_created and s.name.endswith("_created"):
                continue
            out.append((s.name, tuple(sorted(s.labels.items())), s.value))
    return sorted(out)


def bucket_counts(registry: CollectorRegistry, name: str, **labels: str) -> dict[str, float]:
    """``le`` -> cumulative count of one histogram child."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name != f"{name}_bucket":
                continue
            have = dict(s.labels)
            le = have.pop("le")
            if have == labels:
                out[le] = s.value
    return out


# ----------------------------------------------------------------------------- counters


def test_counter_without_labels() -> None:
    registry = CollectorRegistry()
    c = FastCounter("t_requests", "Requests", registry=registry)
    c.inc()
    c.inc(2.5)
    assert registry.get_sample_value("t_requests_total") == 3.5
    text = generate_latest(registry).decode()
    assert "# TYPE t_requests_total counter" in text
    assert "# HELP t_requests_total Requests" in text
    assert "t_requests_total 3.5" in text.splitlines()


def test_counter_with_labels() -> None:
    registry = CollectorRegistry()
    c = FastCounter("t_ops", "Ops", ["operation", "code"], registry=registry)
    c.labels("find", "OK").inc()
    c.labels("find", "OK").inc()
    c.labels("insert", "OK").inc(5)
    c.labels("find", "BAD").inc()
    get = registry.get_sample_value
    assert get("t_ops_total", {"operation": "find", "code": "OK"}) == 2
    assert get("t_ops_total", {"operation": "insert", "code": "OK"}) == 5
    assert get("t_ops_total", {"operation": "find", "code": "BAD"}) == 1
    assert get("t_ops_total", {"operation": "insert", "code": "BAD"}) is None
    text = generate_latest(registry).decode()
    assert 't_ops_total{code="OK",operation="insert"} 5.0' in text.splitlines()
    assert ("t_ops_total", (("code", "OK"), ("operation", "find")), 2.0) in samples(registry)


def test_counter_name_with_total_suffix() -> None:
    registry = CollectorRegistry()
    c = FastCounter("t_hits_total", "Hits", registry=registry)
    assert c.name == "t_hits"
    c.inc(3)
    assert registry.get_sample_value("t_hits_total") == 3
    assert registry.get_sample_value("t_hits_total_total") is None
    assert [s[0] for s in samples(registry)] == ["t_hits_total"]


def test_counter_matches_prometheus_client_counter() -> None:
    fast_registry, real_registry = CollectorRegistry(), CollectorRegistry()
    fast = FastCounter("t_c", "C", ["m"], registry=fast_registry)
    real = Counter("t_c", "C", ["m"], registry=real_registry)
    for m, amount in [("a", 1.0), ("b", 2.0), ("a", 0.5), ("c", 0.0)]:
        fast.labels(m).inc(amount)
        real.labels(m).inc(amount)
    assert samples(fast_registry) == samples(real_registry)
    assert generate_latest(fast_registry) == _without_created(generate_latest(real_registry))


def _without_created(text: bytes) -> bytes:
    return b"\n".join(line for line in text.split(b"\n") if b"_created" not in line)


def test_label_values_are_strings() -> None:
    registry = CollectorRegistry()
    c = FastCounter("t_s", "S", ["n"], registry=registry)
    c.labels(3).inc()  # type: ignore[arg-type]
    assert c.labels("3") is c.labels(3)  # type: ignore[arg-type]
    assert registry.get_sample_value("t_s_total", {"n": "3"}) == 1


# ----------------------------------------------------------------------------- children and labels


def test_labels_children_are_cached() -> None:
    registry = CollectorRegistry()
    c = FastCounter("t_k", "K", ["a"], registry=registry)
    h = FastHistogram("t_kh", "KH", ["a"], buckets=BUCKETS, registry=registry)
    assert c.labels("x") is c.labels("x")
    assert c.labels("x") is not c.labels("y")
    assert h.labels("x") is h.labels("x")
    assert h.labels("x") is not h.labels("y")
    plain = FastCounter("t_plain", "P", registry=registry)
    assert plain.labels() is plain.labels()


def test_wrong_label_count_raises() -> None:
    registry = CollectorRegistry()
    c = FastCounter("t_w", "W", ["a", "b"], registry=registry)
    h = FastHistogram("t_wh", "WH", ["a"], buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError):
        c.labels("only-one")
    with pytest.raises(ValueError):
        c.labels("1", "2", "3")
    with pytest.raises(ValueError):
        c.inc()  # a labelled counter has no unlabelled child
    with pytest.raises(ValueError):
        h.labels()
    with pytest.raises(ValueError):
        h.observe(1.0)
    with pytest.raises(ValueError):
        FastCounter("t_w0", "W0", registry=registry).labels("x")
    # nothing half-created by the failures (an unlabelled counter shows 0 from the
    # start, as prometheus_client's does)
    assert samples(registry) == [("t_w0_total", (), 0.0)]


def test_registering_a_duplicate_name_fails() -> None:
    registry = CollectorRegistry()
    FastCounter("t_dup", "D", registry=registry)
    with pytest.raises(ValueError):
        FastCounter("t_dup", "D", registry=registry)
    with pytest.raises(ValueError):
        Counter("t_dup", "D", registry=registry)
    FastHistogram("t_duph", "DH", buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError):
        Histogram("t_duph", "DH", buckets=BUCKETS, registry=registry)


def test_registry_none_registers_nothing() -> None:
    c = FastCounter("t_unregistered", "U", registry=None)
    c.inc()
    assert c.labels().value == 1


# ----------------------------------------------------------------------------- histograms


def test_histogram_buckets_cumulative_and_le_inclusive() -> None:
    registry = CollectorRegistry()
    h = FastHistogram("t_lat", "Latency", buckets=BUCKETS, registry=registry)
    for v in (0.1, 0.5, 1.0, 1.0001, 2.5, 7.0, 10.0, 11.0, 1e9):
        h.observe(v)
    assert bucket_counts(registry, "t_lat") == {
        "0.5": 2,  # 0.1, 0.5 (a value equal to the bound counts in it)
        "1.0": 3,  # + 1.0
        "2.5": 5,  # + 1.0001, 2.5
        "10.0": 7,  # + 7.0, 10.0
        "+Inf": 9,  # + 11.0, 1e9
    }
    get = registry.get_sample_value
    assert get("t_lat_count") == 9
    assert get("t_lat_bucket", {"le": "+Inf"}) == get("t_lat_count")
    assert get("t_lat_sum") == pytest.approx(0.1 + 0.5 + 1.0 + 1.0001 + 2.5 + 7.0 + 10.0 + 11.0 + 1e9)


def test_histogram_buckets_sorted_and_inf_dropped() -> None:
    registry = CollectorRegistry()
    h = FastHistogram("t_sorted", "S", buckets=(5, 1, float("inf"), 2), registry=registry)
    h.observe(1.5)
    assert list(bucket_counts(registry, "t_sorted")) == ["1.0", "2.0", "5.0", "+Inf"]
    assert bucket_counts(registry, "t_sorted") == {"1.0": 0, "2.0": 1, "5.0": 1, "+Inf": 1}
    with pytest.raises(ValueError):
        FastHistogram("t_nobuckets", "N", buckets=(float("inf"),), registry=registry)


def test_histogram_with_labels() -> None:
    registry = CollectorRegistry()
    h = FastHistogram("t_hl", "HL", ["method"], buckets=(1, 2), registry=registry)
    h.labels("a").observe(1)
    h.labels("a").observe(3)
    h.labels("b").observe(2)
    assert bucket_counts(registry, "t_hl", method="a") == {"1.0": 1, "2.0": 1, "+Inf": 2}
    assert bucket_counts(registry, "t_hl", method="b") == {"1.0": 0, "2.0": 1, "+Inf": 1}
    get = registry.get_sample_value
    assert get("t_hl_sum", {"method": "a"}) == 4
    assert get("t_hl_count", {"method": "b"}) == 1


def _fill(
    fast: FastHistogram, real: Histogram, children: Iterable[tuple[str, float]]
) -> None:
    for label, value in children:
        fast.labels(label).observe(value)
        real.labels(label).observe(value)


def test_histogram_exposition_matches_prometheus_client() -> None:
    buckets = (0.0005, 0.001, 0.0025, 0.01, 0.1, 1, 2.5, 10)
    fast_registry, real_registry = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("t_rpc", "RPC latency", ["method"], buckets=buckets,
                         registry=fast_registry)
    real = Histogram("t_rpc", "RPC latency", ["method"], buckets=buckets,
                     registry=real_registry)
    observations = [
        ("Query", 0.0004), ("Query", 0.0005), ("Query", 0.001), ("Insert", 0.3),
        ("Insert", 2.5), ("Query", 12.0), ("Update", 0.0), ("Insert", 0.01),
    ]
    _fill(fast, real, observations)
    assert samples(fast_registry) == samples(real_registry)
    # the text itself too (names, HELP/TYPE lines, label and bound formatting)
    assert generate_latest(fast_registry) == _without_created(generate_latest(real_registry))


def test_unlabelled_histogram_matches_prometheus_client_once_used() -> None:
    fast_registry, real_registry = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("t_u", "U", buckets=BUCKETS, registry=fast_registry)
    real = Histogram("t_u", "U", buckets=BUCKETS, registry=real_registry)
    for v in (0.2, 1.0, 3.0):
        fast.observe(v)
        real.observe(v)
    assert samples(fast_registry) == samples(real_registry)


observations = st.lists(
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=True), max_size=60
)
bucket_sets = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=8,
    unique=True,
)


@SETTINGS
@given(values=observations, buckets=bucket_sets)
def test_bucket_counts_equal_prometheus_client(values: list[float], buckets: list[float]) -> None:
    fast_registry, real_registry = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("t_p", "P", buckets=buckets, registry=fast_registry)
    real = Histogram("t_p", "P", buckets=sorted(buckets), registry=real_registry)
    # observe exact bounds as well as the generated values
    for v in [*values, *buckets]:
        fast.observe(v)
        real.observe(v)
    assert bucket_counts(fast_registry, "t_p") == bucket_counts(real_registry, "t_p")
    get_fast, get_real = fast_registry.get_sample_value, real_registry.get_sample_value
    assert get_fast("t_p_count") == get_real("t_p_count") == len(values) + len(buckets)
    assert get_fast("t_p_sum") == get_real("t_p_sum")


def test_unlabelled_metrics_are_exposed_before_first_use() -> None:
    registry = CollectorRegistry()
    FastCounter("t_fresh", "F", registry=registry)
    FastHistogram("t_fresh_h", "FH", buckets=BUCKETS, registry=registry)
    assert registry.get_sample_value("t_fresh_total") == 0.0
    assert registry.get_sample_value("t_fresh_h_count") == 0.0


def test_nan_is_not_counted() -> None:
    registry = CollectorRegistry()
    h = FastHistogram("t_nan", "N", buckets=BUCKETS, registry=registry)
    h.observe(float("nan"))
    assert registry.get_sample_value("t_nan_count") == 0.0
