"""The one progress display: live on a terminal, periodic lines elsewhere, silent for --json."""

import io

from fanout_cli.progress import ProgressDisplay, format_duration, format_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rate_and_eta_from_the_fraction_of_the_work() -> None:
    clock = Clock()
    display = ProgressDisplay(io.StringIO(), label="data.csv", clock=clock)
    clock.now += 10
    text = display.render(40_000, fraction=0.25, counts={"read": 50_000, "written": 40_000})
    assert text == "data.csv: read 50,000, written 40,000 · 4,000 rows/s · 25% · ETA 0:30 · 0:10 elapsed"


def test_eta_from_the_total_when_no_fraction_is_known() -> None:
    clock = Clock()
    display = ProgressDisplay(io.StringIO(), label="make-csv", clock=clock)
    clock.now += 2
    assert display.render(500, total=1_000) == "make-csv: 500/1,000 rows · 250 rows/s · 50% · ETA 0:02 · 0:02 elapsed"


def test_nothing_done_or_too_fast_to_time_never_says_zero_per_second() -> None:
    assert format_rate(0, 5.0, "rows") == "— rows/s"
    assert format_rate(1, 0.0, "rows") == "1 rows in <1 ms"
    assert format_rate(1, 0.5, "rows") == "2 rows/s"
    assert format_rate(1, 2.03, "rows") == "0.49 rows/s"  # a 1-row file is not "0 rows/s"
    assert format_rate(123_456, 10.0, "rows") == "12,346 rows/s"
    assert format_duration(3725) == "1:02:05"


def test_a_pipe_gets_a_line_every_interval_not_every_update() -> None:
    clock, stream = Clock(), io.StringIO()
    display = ProgressDisplay(stream, label="job", clock=clock, line_interval_s=5)
    for _ in range(10):
        display.update(10)
        clock.now += 1
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    display.update(20, force=True)
    assert len(stream.getvalue().splitlines()) == 3


def test_a_terminal_redraws_one_line_and_close_clears_it() -> None:
    clock, tty = Clock(), Tty()
    display = ProgressDisplay(tty, label="job", clock=clock)
    display.update(1)
    clock.now += 1
    display.update(2)
    assert tty.getvalue().count("\r") == 2 and "\n" not in tty.getvalue()
    display.close()
    assert tty.getvalue().endswith("\r")


def test_quiet_writes_nothing() -> None:
    stream = Tty()
    display = ProgressDisplay(stream, label="job", quiet=True)
    display.update(5, force=True)
    display.close()
    assert stream.getvalue() == ""


def test_a_note_stands_before_the_elapsed_time() -> None:
    clock = Clock()
    display = ProgressDisplay(io.StringIO(), label="job j", clock=clock)
    clock.now += 70
    text = display.render(50, total=75, counts={"read": 75, "settled": 50},
                          note="no progress for 1:05")
    assert text.endswith("· no progress for 1:05 · 1:10 elapsed")


def test_no_rate_until_it_is_measured_over_a_real_interval() -> None:
    # Given a display whose first figures come 2 ms after it started
    clock = Clock()
    display = ProgressDisplay(io.StringIO(), label="job", clock=clock)
    clock.now += 0.002
    # Then there is no rate (not 500,000 rows/s) and no ETA yet
    assert display.render(1_000, total=10_000) == "job: 1,000/10,000 rows · — rows/s · 10% · 0:00 elapsed"
    clock.now += 1.998
    assert "500 rows/s" in display.render(1_000, total=10_000)


def test_following_a_running_job_measures_from_the_first_figures_seen() -> None:
    # Given a job that settled 500,000 rows before `status --follow` began
    clock, stream = Clock(), io.StringIO()
    display = ProgressDisplay(stream, label="job j", clock=clock, from_first_update=True,
                              line_interval_s=0)
    display.update(500_000, total=1_000_000)
    assert "— rows/s" in stream.getvalue() and "ETA" not in stream.getvalue()
    # When 10,000 more settle in the next 2 s
    clock.now += 2
    display.update(510_000, total=1_000_000)
    # Then the rate is what moved while following (5,000 rows/s), and so is the ETA
    last = stream.getvalue().splitlines()[-1]
    assert "5,000 rows/s" in last and "51%" in last and "ETA 1:38" in last
