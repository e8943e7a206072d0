"""The benchmark's cost and time model (bench/model.py): pure functions, no I/O."""

from __future__ import annotations

import math

import pytest

from bench import model


def test_write_units_round_up_per_kb_with_a_minimum_of_one() -> None:
    assert model.write_units(0) == 1
    assert model.write_units(1) == 1
    assert model.write_units(1024) == 1
    assert model.write_units(1025) == 2
    assert model.write_units(400 * 1024) == 400


def test_read_units_per_4kb_and_half_for_eventual_consistency() -> None:
    assert model.read_units(0) == 1
    assert model.read_units(4096) == 1
    assert model.read_units(4097) == 2
    assert model.read_units(4097, consistent=False) == 1


def test_sqs_bills_each_64_kib_chunk() -> None:
    assert model.sqs_billed_requests(0) == 1
    assert model.sqs_billed_requests(65536) == 1
    assert model.sqs_billed_requests(65537) == 2
    assert model.sqs_billed_requests(1_048_576) == 16


def test_lambda_cpu_share_is_proportional_to_memory_up_to_one_vcpu() -> None:
    assert model.lambda_cpu_share(1769) == 1.0
    assert model.lambda_cpu_share(3538) == 1.0
    assert model.lambda_cpu_share(512) == pytest.approx(512 / 1769)


def test_cost_of_the_floor_alone_has_no_overhead() -> None:
    bill = model.cost(model.Usage(rows=1e6, item_wru=1e6))
    assert bill.floor == pytest.approx(0.625)
    assert bill.overhead == 0
    assert bill.overhead_pct == 0
    assert bill.total == pytest.approx(0.625)


def test_cost_prices_every_service_with_the_aws_facts_prices() -> None:
    usage = model.Usage(rows=1e6, item_wru=1e6, ledger_wru=8_000, ddb_rru=1_000,
                        sqs_requests=12_000, s3_get=1_000, s3_put=1_000,
                        lambda_requests=4_000, lambda_gb_s=100)
    bill = model.cost(usage)
    assert bill.ledger == pytest.approx(8_000 * 0.625e-6)
    assert bill.reads == pytest.approx(1_000 * 0.125e-6)
    assert bill.sqs == pytest.approx(12_000 * 0.40e-6)
    assert bill.s3 == pytest.approx(0.0004 + 0.005)
    assert bill.lambda_ == pytest.approx(4_000 * 0.2e-6 + 100 * 0.0000133334)
    assert bill.overhead_pct == pytest.approx(100 * bill.overhead / 0.625)


def test_usage_scales_linearly() -> None:
    usage = model.Usage(rows=20_000, item_wru=20_000, ledger_wru=160, sqs_requests=400,
                        lambda_gb_s=2.0)
    scaled = usage.scaled(1e6)
    assert scaled.rows == 1e6
    assert scaled.item_wru == pytest.approx(1e6)
    assert scaled.ledger_wru == pytest.approx(8_000)
    assert scaled.sqs_requests == pytest.approx(20_000)
    assert scaled.lambda_gb_s == pytest.approx(100)


def test_writer_invocation_duration_adds_writes_cpu_and_ledger() -> None:
    a = model.WriterAssumptions(batch_write_latency_s=0.01, ledger_write_latency_s=0.005,
                                ledger_writes_per_invocation=2, memory_mb=1769,
                                invoke_overhead_s=0.0)
    # 10 messages of 25 rows: 10 calls (0.1 s) + 250 rows x 10 us (2.5 ms) + 2 ledger writes
    assert model.writer_invocation_s(10, 25, 10e-6, a) == pytest.approx(0.1 + 0.0025 + 0.01)
    # half the memory, twice the CPU time
    half = model.WriterAssumptions(batch_write_latency_s=0.01, ledger_write_latency_s=0.005,
                                   ledger_writes_per_invocation=2, memory_mb=1769 // 2 + 1,
                                   invoke_overhead_s=0.0)
    assert model.writer_invocation_s(10, 25, 10e-6, half) > 0.1 + 0.005 + 0.01 - 1e-4
    assert model.writer_rows_per_s(10, 25, 10e-6, a) == pytest.approx(250 / 0.1125)


def test_splitter_rate_is_read_and_parse_in_series_capped_by_sending() -> None:
    a = model.SplitterAssumptions(memory_mb=1769, s3_read_mb_s=100, send_latency_s=0.01,
                                  send_workers=8, object_reads=1)
    # parse 200k rows/s, read 100 MB/s at 100 B/row = 1M rows/s -> 1/(1/200k + 1/1M)
    assert model.splitter_rows_per_s(200_000, 100, a=a) == pytest.approx(1 / (1 / 2e5 + 1 / 1e6))
    # the check pass reads the object a second time: 500k rows/s of reading
    twice = model.SplitterAssumptions(memory_mb=1769, s3_read_mb_s=100, send_latency_s=0.01,
                                      send_workers=8, object_reads=2)
    assert model.splitter_rows_per_s(200_000, 100, a=twice) == pytest.approx(1 / (1 / 2e5 + 1 / 5e5))
    slow_send = model.SplitterAssumptions(memory_mb=1769, s3_read_mb_s=100, send_latency_s=1.0,
                                          send_workers=1)
    assert model.splitter_rows_per_s(200_000, 100, a=slow_send) == 250  # 10 msgs x 25 rows


def test_esm_concurrency_ramps_from_5_by_300_a_minute_to_the_cap() -> None:
    assert model.esm_concurrency(0) == 5
    assert model.esm_concurrency(60) == 305
    assert model.esm_concurrency(600) == 1000
    assert model.esm_concurrency(600, cap=50) == 50
    assert model.esm_concurrency(600, cap=5000) == 1000


def test_load_bound_by_the_table_limit() -> None:
    result = model.simulate_load(1e6, table_wru_s=1_000, writer_rows_s=1_000,
                                 max_concurrency=50, splitter_rows_s=1e6)
    assert result.finished
    assert result.bottleneck == "table"
    assert result.seconds == pytest.approx(1_000, rel=0.01)
    assert result.splitter_seconds == pytest.approx(1.0)


def test_load_bound_by_the_writers_ramp() -> None:
    # 5 writers at 10 rows/s, +5 a second (300/min), capped at 50 -> 500 rows/s
    result = model.simulate_load(100_000, table_wru_s=40_000, writer_rows_s=10,
                                 max_concurrency=50, splitter_rows_s=1e6)
    assert result.bottleneck == "writers"
    ramp_rows = sum(min(50, 5 + 5 * t) * 10 for t in range(9))
    expected = 9 + (100_000 - ramp_rows) / 500
    assert result.seconds == pytest.approx(expected, abs=1.0)


def test_load_bound_by_the_splitter() -> None:
    result = model.simulate_load(1e6, table_wru_s=40_000, writer_rows_s=10_000,
                                 max_concurrency=50, splitter_rows_s=2_000)
    assert result.bottleneck == "splitter"
    assert result.seconds == pytest.approx(500, abs=1.5)


def test_a_splitter_past_its_timeout_never_finishes_the_load() -> None:
    result = model.simulate_load(1e6, table_wru_s=40_000, writer_rows_s=10_000,
                                 max_concurrency=50, splitter_rows_s=1_000,
                                 splitter_timeout_s=900)
    assert not result.finished
    assert not result.splitter_finished
    assert math.isinf(result.seconds)
    assert result.rows_split == pytest.approx(900_000)
    assert result.rows_written == pytest.approx(900_000)


def test_single_streaming_lambda_stops_at_15_minutes() -> None:
    result = model.single_streaming_lambda(100e6)
    assert not result.finished
    assert result.rows_in_timeout == pytest.approx(17_000 * 900)
    assert result.seconds_needed == pytest.approx(100e6 / 17_000)
    assert result.invocations_needed == 7
    small = model.single_streaming_lambda(1e6)
    assert small.finished and small.invocations_needed == 1
    throttled = model.single_streaming_lambda(1e6, table_wru_s=4_000)
    assert throttled.seconds_needed == pytest.approx(250)


def test_step_functions_transitions_cost_against_the_floor() -> None:
    sfn = model.step_functions_distributed_map(100e6, rows_per_child=25,
                                               transitions_per_child=4, parent_transitions=0)
    assert sfn.children == 4_000_000
    assert sfn.transitions == 20_000_000
    assert sfn.transitions_cost == pytest.approx(500.0)
    assert sfn.floor == pytest.approx(62.5)
    assert sfn.overhead_pct == pytest.approx(800.0)
    assert sfn.seconds == pytest.approx(100e6 / 80_000)
    capped = model.step_functions_distributed_map(100e6, table_wru_s=40_000)
    assert capped.seconds == pytest.approx(2_500)


def test_floor_and_helpers() -> None:
    assert model.floor_cost(1e6) == pytest.approx(0.625)
    assert model.floor_cost(1e6, wru_per_row=2) == pytest.approx(1.25)
    assert model.per_million({"calls": 40}, 1_000) == {"calls": 40_000}
    assert model.human_seconds(math.inf) == "never"
    assert model.human_seconds(90) == "90 s"
    assert model.human_seconds(2_520) == "42 min"
    assert model.human_seconds(25_000) == "6.9 h"


# --------------------------------------------------------------------------- writer defaults

def test_writer_cost_per_million_is_gb_seconds_and_requests() -> None:
    # 400 invocations of 2,500 rows at 5,000 rows/s: 0.5 s each at 0.5 GB
    cost = model.writer_cost_per_million(512, 5_000, 2_500)
    assert cost == pytest.approx(400 * (0.5 * 0.5 * 0.0000133334 + 0.2e-6))


def test_cheapest_memory_weighs_memory_against_speed() -> None:
    # CPU-bound: twice the memory, twice the rate, same GB-s; the tie goes to the faster.
    bound = model.WriterMeasurement({256: 2_000, 512: 4_000, 1024: 6_000}, 8, 2_500)
    assert model.cheapest_memory(bound) == 512
    # Latency-bound: the rate hardly moves with memory, so the smallest is cheapest.
    flat = model.WriterMeasurement({256: 5_000, 512: 5_200, 1024: 5_300}, 8, 2_500)
    assert model.cheapest_memory(flat) == 256


def test_max_concurrency_reaches_the_budget_within_the_mappings_limits() -> None:
    assert model.max_concurrency(40_000, 4_800) == 9  # 8 would give 38,400
    assert model.max_concurrency(4_000, 4_800) == 2  # the ESM's minimum
    assert model.max_concurrency(10_000_000, 100) == 1000
    assert model.max_concurrency(40_000, 4_000, wru_per_row=2) == 5  # 20,000 rows/s
    with pytest.raises(ValueError):
        model.max_concurrency(40_000, 0)


def test_million_rows_usage_counts_the_designs_requests() -> None:
    usage = model.million_rows_usage(batch_messages=100, message_bytes=4_000, bytes_per_row=100,
                                     writer_rows_s=5_000, writer_memory_mb=1024,
                                     splitter_rows_s=100_000)
    # 40,000 messages: 4,000 sends, 4,000 receives, 4,000 deletes (10 x 4 KB < 64 KiB each)
    assert usage.sqs_requests == pytest.approx(12_000)
    assert usage.ledger_wru == pytest.approx(800)  # 400 invocations x 2
    assert usage.lambda_requests == pytest.approx(401)
    splitter = model.splitter_gb_s(1e6, 100_000)
    assert usage.lambda_gb_s == pytest.approx(400 * 0.5 * 1.0 + splitter)
    # 100 MB in 8 MiB ranges, read twice, and a HEAD
    assert usage.s3_get == 2 * 12 + 1
    big = model.million_rows_usage(batch_messages=100, message_bytes=8_000, bytes_per_row=100,
                                   writer_rows_s=5_000, writer_memory_mb=1024,
                                   splitter_rows_s=100_000)
    assert big.sqs_requests == pytest.approx(4_000 * 2 + 4_000 * 2 + 4_000)  # 80 KB: 2 chunks


def test_writer_defaults_follow_the_measurement() -> None:
    measured = model.WriterMeasurement({256: 2_000, 512: 4_150, 1024: 6_000}, 8, 2_500)
    derived = model.writer_defaults(measured, batch_messages=100, message_bytes=3_600,
                                    bytes_per_row=124, splitter_rows_s=133_333)
    assert derived.memory_mb == 512
    assert derived.rows_per_writer_s == 4_100  # rounded down to 100
    assert derived.writers_for_40k == 10
    assert derived.load_100m_40k.finished
    assert derived.load_100m_40k.seconds == pytest.approx(2_500, abs=15)  # the table's pace
    assert derived.cost.floor == pytest.approx(0.625)


def test_the_stacks_writer_defaults_are_the_models() -> None:
    """infra/fanout_stack/config.py and fanout/settings.py deploy what the model derives
    from the recorded run, so they cannot drift from the measurement apart."""
    import sys
    from pathlib import Path

    from fanout.settings import DEFAULT_CONFIG

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
    from fanout_stack.config import (
        DEFAULT_ROWS_PER_WRITER_S,
        DEFAULT_WRITER_MEMORY_MB,
        writer_concurrency,
    )

    derived = model.writer_defaults(model.RECORDED_WRITER, batch_messages=DEFAULT_CONFIG.batch_size,
                                    **model.RECORDED_PIPELINE)
    assert derived.memory_mb == DEFAULT_WRITER_MEMORY_MB
    assert derived.rows_per_writer_s == DEFAULT_ROWS_PER_WRITER_S
    assert DEFAULT_CONFIG.writer_in_flight == derived.in_flight
    # the stack's MaximumConcurrency for a 40,000 WCU/s budget reaches it
    assert writer_concurrency(40_000, derived.rows_per_writer_s) >= derived.writers_for_40k
    # and the stack's MaximumConcurrency rule is the model's
    for budget in (1_000, 4_000, 40_000, 5_000_000):
        for rate in (100, 2_500, derived.rows_per_writer_s):
            assert writer_concurrency(budget, rate) == model.max_concurrency(budget, rate)


def test_the_cost_model_prices_the_splitter_at_the_stacks_memory() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
    from fanout_stack.functions import SPLITTER_MEMORY_MB

    assert model.SplitterAssumptions().memory_mb == SPLITTER_MEMORY_MB
