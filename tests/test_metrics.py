"""Prometheus metrics of predictions: the frame-age histogram and the stage latencies."""

from __future__ import annotations

import pytest

from edge_runtime.service.metrics import PredictionMetrics
from tests.fakes_io import prediction

prometheus_client = pytest.importorskip("prometheus_client")


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_frame_age_is_a_histogram_at_inference_and_at_decision() -> None:
    metrics = PredictionMetrics(prometheus_client)
    for age, total in ((4.0, 9.0), (30.0, 70.0), (120.0, 180.0)):
        latency = {"inference": 5.0, "age_at_inference": age, "total": total}
        metrics.observe(prediction(latency_ms=latency))
    samples = samples_of(metrics.render()[0].decode())
    at_inference, at_decision = (("at", "inference"),), (("at", "decision"),)
    assert samples[("edge_classify_frame_age_seconds_count", at_inference)] == 3
    assert samples[("edge_classify_frame_age_seconds_sum", at_inference)] == pytest.approx(0.154)
    assert samples[("edge_classify_frame_age_seconds_sum", at_decision)] == pytest.approx(0.259)
    # Cumulative buckets: 4 ms and 30 ms are under 50 ms, 120 ms is not; all are under 150 ms.
    bucket = "edge_classify_frame_age_seconds_bucket"
    assert samples[(bucket, (("at", "inference"), ("le", "0.05")))] == 2
    assert samples[(bucket, (("at", "inference"), ("le", "0.15")))] == 3
    assert samples[(bucket, (("at", "decision"), ("le", "0.05")))] == 1
    # The age at inference is not a stage; the stages keep their histogram, "total" included.
    stages = {
        dict(labels)["stage"]
        for name, labels in samples
        if name == "edge_classify_stage_latency_seconds_count"
    }
    assert stages == {"inference", "total"}
