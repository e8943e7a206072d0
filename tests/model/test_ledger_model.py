"""The ledger's protocol against faults, over seeds: see tests/model/harness.py for the
model and its checks. FANOUT_MODEL_SEEDS sets how many seeds (300 by default; `make
test-full` runs 5,000); FANOUT_MODEL_SEED=N runs seed N alone and prints its trace."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict

from tests.model.harness import SeedResult, run_seed

SEEDS = int(os.environ.get("FANOUT_MODEL_SEEDS", "300"))
ONE_SEED = os.environ.get("FANOUT_MODEL_SEED")
TEST = "test_the_ledger_ends_every_job_exactly_under_faults"


def replay_command(seed: int) -> str:
    return f"FANOUT_MODEL_SEED={seed} python -m pytest tests/model -k {TEST} -s"


def report(results: list[SeedResult], seconds: float) -> str:
    """Failures grouped by kind, each with its seeds and one replay command; then what
    the run covered."""
    by_kind: dict[str, list[SeedResult]] = defaultdict(list)
    for result in results:
        for kind in result.kinds:
            by_kind[kind].append(result)
    lines = []
    for kind, failed in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        first = failed[0]
        detail = next(p.detail for p in first.problems if p.kind == kind)
        lines += [f"{len(failed)} seed(s): {kind}",
                  f"    seeds {[r.seed for r in failed][:30]}",
                  f"    seed {first.seed}: {detail}",
                  f"    replay: {replay_command(first.seed)}"]
    faults: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
    republished = Counter(why for r in results for why in r.republished_why)
    cpu = sum(r.cpu_seconds for r in results)
    lines += [f"{len(results)} seeds in {seconds:.1f} s, {cpu:.1f} s of CPU ({1000 * cpu / len(results):.0f} ms "
              f"a seed, {sum(r.calls for r in results) / len(results):.0f} ledger calls a seed); "
              f"faults injected {dict(faults)}",
              f"summaries published more than once in {sum(r.published > 1 for r in results)} "
              f"seed(s): {dict(republished)}",
              f"folded log records deleted by the TTL sweep: {sum(r.ttl_deleted for r in results)} "
              f"in {sum(r.ttl_deleted > 0 for r in results)} seed(s)"]
    return "\n".join(lines)


def test_the_ledger_ends_every_job_exactly_under_faults(aws, stack) -> None:
    """Every seed's job ends COMPLETE with exact counts, never completes early, and has
    its summary published: at least once, more than once only after a publisher died
    before recording it."""
    template = aws.dynamodb.describe_table(TableName=stack.settings.ledger_table_name)["Table"]
    seeds = [int(ONE_SEED)] if ONE_SEED else list(range(SEEDS))
    started = time.perf_counter()
    results = [run_seed(seed, aws.dynamodb, template, trace=ONE_SEED is not None) for seed in seeds]
    text = report(results, time.perf_counter() - started)
    print(text)
    if ONE_SEED:
        (result,) = results
        print(f"seed {result.seed}: {result.plan.describe()}", *(result.trace or []), sep="\n")
        for problem in result.problems:
            print(f"PROBLEM {problem.kind}: {problem.detail}")
    assert not any(r.problems for r in results), text
    # The TTL sweep ran: records the fold had passed were deleted under live jobs.
    assert ONE_SEED or len(results) < 20 or sum(r.ttl_deleted > 0 for r in results) > len(results) // 5, text
