"""fanout's benchmarks and cost model: `python -m bench [--quick]` prints one markdown table.

Not tests: nothing here is collected by pytest (the suite lives under tests/). The pure
cost and time model is bench.model, tested in tests/unit/test_bench_model.py.
"""
