"""One progress display for every command: live on a terminal, a line now and then elsewhere.

`fanout ingest` (local and `--stack`), `fanout status --follow`, `fanout make-csv` and
`dlq-replayer` all report through `ProgressDisplay`, so a person waiting sees the same
things everywhere: what is done (and of what), the rate, and an ETA once one is possible.

- On a terminal the line is redrawn in place at most every `live_interval_s`.
- On a pipe or a file a plain line is written every `line_interval_s` (CI logs, `tee`).
- `quiet=True` (for `--json`) or no stream writes nothing at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TextIO

LIVE_INTERVAL_S = 0.2
LINE_INTERVAL_S = 5.0
# A rate is shown once it is measured over at least this long: a first tick a few
# milliseconds in (or of work done before the display began) is not a rate.
MIN_RATE_INTERVAL_S = 1.0


def format_duration(seconds: float) -> str:
    """`0:07`, `12:30`, `1:02:03`: an ETA or elapsed time a person reads at a glance."""
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(done: int, elapsed_s: float, unit: str) -> str:
    """`4,210 rows/s`, `0.49 rows/s`; a run too short to time (or nothing done) says so
    instead of `0 rows/s`."""
    if done <= 0:
        return f"— {unit}/s"
    if elapsed_s < 0.001:
        return f"{done:,} {unit} in <1 ms"
    rate = done / elapsed_s
    return f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2g} {unit}/s"


class ProgressDisplay:
    """Shows `done` (of `total`, or of a `fraction` of the work) with a rate and an ETA.

    `update(done, total=..., fraction=..., **counts)`: `done` is what the rate measures
    (rows settled, rows generated, messages replayed); `counts` are shown beside it in the
    order given (read=..., written=..., rejected=...). The ETA comes from `fraction` when
    the caller knows how far through the work it is (bytes split of the file's size),
    otherwise from `total`.

    The rate and the ETA measure from the display's start, or, with `from_first_update`
    (following a job that was already running), from the first figures it is given; both
    wait for MIN_RATE_INTERVAL_S of measuring.
    """

    def __init__(self, stream: TextIO | None, *, label: str, unit: str = "rows",
                 quiet: bool = False, clock: Callable[[], float] = time.monotonic,
                 live_interval_s: float = LIVE_INTERVAL_S,
                 line_interval_s: float = LINE_INTERVAL_S, from_first_update: bool = False) -> None:
        self.stream = None if quiet else stream
        self.live = bool(self.stream is not None and _isatty(self.stream))
        self.label = label
        self.unit = unit
        self.clock = clock
        self.started = clock()
        self.interval = live_interval_s if self.live else line_interval_s
        self.last_shown: float | None = None
        self.width = 0
        # (done, progress, when) the rate and the ETA are measured from.
        self.baseline: tuple[int, float, float] | None = None if from_first_update \
            else (0, 0.0, self.started)

    def render(self, done: int, total: int | None = None, fraction: float | None = None,
               counts: Mapping[str, int] | None = None, note: str | None = None) -> str:
        """The progress text for these figures (and a `note`, such as how long the work
        has not moved), as it would be shown now."""
        now = self.clock()
        elapsed = now - self.started
        parts: list[str] = []
        if counts:
            parts.append(", ".join(f"{name} {value:,}" for name, value in counts.items()))
        else:
            parts.append(f"{done:,}" + (f"/{total:,}" if total else "") + f" {self.unit}")
        progress = fraction if fraction is not None else (done / total if total else None)
        if progress is not None:
            progress = min(max(progress, 0.0), 1.0)
        base_done, base_progress, base_at = self.baseline or (done, progress or 0.0, now)
        measured = now - base_at
        timed = measured >= MIN_RATE_INTERVAL_S
        parts.append(format_rate(done - base_done, measured, self.unit) if timed
                     else f"— {self.unit}/s")
        if progress is not None:
            parts.append(f"{progress:.0%}")
            if timed and 0 < progress < 1 and progress > base_progress:
                parts.append("ETA " + format_duration(measured * (1 - progress)
                                                      / (progress - base_progress)))
        if note:
            parts.append(note)
        parts.append(format_duration(elapsed) + " elapsed")
        return f"{self.label}: " + " · ".join(parts)

    def update(self, done: int, total: int | None = None, fraction: float | None = None,
               force: bool = False, note: str | None = None, **counts: int) -> None:
        """Show the figures if the stream is due for a line (or `force`)."""
        if self.stream is None:
            return
        now = self.clock()
        if self.baseline is None:
            progress = fraction if fraction is not None else (done / total if total else 0.0)
            self.baseline = (done, min(max(progress, 0.0), 1.0), now)
        if not force and self.last_shown is not None and now - self.last_shown < self.interval:
            return
        self.last_shown = now
        text = self.render(done, total, fraction, counts, note)
        if self.live:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear a live line, so the summary that follows starts on a clean line."""
        if self.stream is not None and self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream is not a terminal
        return False


def read_as(source_format: str, columns_named: list[str]) -> str:
    """The "read as" line: how the file was read, and the columns given a name."""
    if not columns_named:
        return source_format
    return f"{source_format}; named {', '.join(columns_named)}"
