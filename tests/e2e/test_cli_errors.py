"""Every `fanout` failure ends with one line on stderr and a documented exit code, never a
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from moto import mock_aws

from fanout_cli.cli import build_parser, main

NO_CREDENTIALS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}


def fanout(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in a clean environment with no AWS credentials."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([sys.executable, "-m", "fanout_cli.cli", *argv], capture_output=True,
                          text=True, timeout=120, env={**base, **NO_CREDENTIALS, **(env or {})})


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    return stderr.strip()


def test_status_with_no_credentials_for_a_remote_endpoint_says_what_to_set() -> None:
    done = fanout("status", "job-1", "--endpoint-url", "https://dynamodb.example.invalid")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith("fanout status: error: no AWS credentials found: set AWS_PROFILE")


def test_status_at_a_loopback_port_where_nothing_listens() -> None:
    # Loopback: credentials are filled in, so the error is the real one (nothing there).
    done = fanout("status", "job-1", "--endpoint-url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        "fanout status: error: cannot connect to http://127.0.0.1:9/: nothing is listening there")


def test_status_of_a_stack_that_does_not_exist(capsys) -> None:
    with mock_aws():
        code = main(["status", "job-1", "--stack", "no-such-stack"])
    assert code == 1
    assert one_line(capsys.readouterr().err) == (
        "fanout status: error: no stack 'no-such-stack' in us-east-1 (check --stack, AWS_PROFILE "
        "and AWS_DEFAULT_REGION)")


def test_status_of_an_unknown_job(capsys, tmp_path: Path) -> None:
    assert main(["status", "nope", "--out-root", str(tmp_path)]) == 1
    assert "no job 'nope' under" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(("argv", "expected"), [
    (["ingest", "x.csv", "--range-bytes", "abc"],
     "fanout ingest: error: argument --range-bytes: must be a whole number of at least 1 (got "
     "'abc') (see fanout ingest --help)"),
    (["ingest", "x.csv", "--concurrency", "0"],
     "fanout ingest: error: argument --concurrency: must be a whole number of at least 1 (got 0) "
     "(see fanout ingest --help)"),
    (["ingest", "x.csv", "--encoding", "cp1252"],
     "fanout ingest: error: argument --encoding: invalid choice: 'cp1252' (choose from 'utf-8', "
     "'utf-16', 'latin-1') (see fanout ingest --help)"),
    (["bogus"], None),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, expected) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    line = one_line(capsys.readouterr().err)
    if expected:
        assert line == expected


def test_a_bad_delimiter_flag_names_the_flag(tmp_path: Path, capsys) -> None:
    data = tmp_path / "x.csv"
    data.write_text("account,offer_id\na,1\n")
    assert main(["ingest", str(data), "--delimiter", ";;"]) == 2
    assert one_line(capsys.readouterr().err).startswith("fanout ingest: error: --delimiter: ';;'")


def test_a_set_encoding_against_a_utf16_bom_exits_2_naming_the_setting(tmp_path: Path,
                                                                       capsys) -> None:
    data = tmp_path / "u16.csv"
    data.write_bytes("account,offer_id\na,1\n".encode("utf-16"))
    assert main(["ingest", str(data), "--encoding", "utf-8"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"fanout ingest: error: {data}: the file starts with a UTF-16 byte order mark, but the "
        "encoding is set to utf-8: set it to utf-16 (--encoding utf-16, or [source] encoding in "
        "the spec), or leave it unset")


def test_bad_gzip_is_a_failed_input_exit_1(tmp_path: Path, capsys) -> None:
    data = tmp_path / "broken.csv"
    data.write_bytes(b"\x1f\x8b\x08\x00" + b"not deflate at all" * 10)
    assert main(["ingest", str(data)]) == 1
    assert "starts like gzip (bytes 1f 8b) but is not valid gzip" in one_line(capsys.readouterr().err)


def test_an_unwritable_output_is_one_line(tmp_path: Path, capsys) -> None:
    target = tmp_path / "no-such-dir" / "data.csv"
    assert main(["make-csv", "--rows", "5", "--output", str(target)]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"fanout make-csv: error: {target}: No such file or directory")


def test_a_spec_error_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    data, spec = tmp_path / "x.csv", tmp_path / "spec.toml"
    data.write_text("account,offer_id\na,1\n")
    spec.write_text("[source]\nencoding = 'ebcdic'\n")
    assert main(["ingest", str(data), "--spec", str(spec)]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"fanout ingest: error: {spec}: source.encoding: 'ebcdic' is not one of utf-8, utf-16, "
        "latin-1")


def test_an_unexpected_failure_is_still_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import fanout_cli.local.ingest as local_ingest

    def broken(*args, **kwargs):
        raise RuntimeError("the emulator\nwould not start")

    monkeypatch.setattr(local_ingest, "Emulator", broken)
    data = tmp_path / "x.csv"
    data.write_text("account,offer_id\na,1\n")
    assert main(["ingest", str(data)]) == 1
    assert one_line(capsys.readouterr().err) == (
        "fanout ingest: error: pipeline failed: RuntimeError: the emulator would not start")


@pytest.mark.parametrize("command", [[], ["status"], ["ingest"]])
def test_help_documents_the_exit_codes(command) -> None:
    parser = build_parser()
    if command:
        parser = next(a for a in parser._subparsers._group_actions  # noqa: SLF001
                      if a.dest == "command").choices[command[0]]
    text = parser.format_help()
    assert "exit status" in text
    assert "  0  " in text and "  1  " in text and "  2  " in text


def test_a_misspelt_flag_is_named_with_its_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ingest", "data.csv", "--partiton-key", "a"])
    assert exited.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "fanout ingest: error: unrecognized arguments: --partiton-key a (see fanout ingest --help)")
    with pytest.raises(SystemExit):
        main(["spec", "infer", "data.csv", "--bogus"])
    assert one_line(capsys.readouterr().err).startswith("fanout spec infer: error: unrecognized arguments: --bogus")


def test_a_folder_is_not_a_missing_file(tmp_path: Path, capsys) -> None:
    assert main(["ingest", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"fanout ingest: error: {tmp_path}: a folder, not a file: give one CSV file (for many, put them "
        "in S3 and use s3://BUCKET/PREFIX with --stack)")


@pytest.mark.parametrize("command", ["ingest", "check"])
def test_a_partition_key_alone_hints_at_the_default_sort_key(command: str, tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    assert main([command, str(data), "--partition-key", "a"]) == 2
    assert one_line(capsys.readouterr().err).endswith(
        "(the default sort key is offer_id: pass --sort-key '' for none, or --sort-key COLUMN)")
    # And with --sort-key '' it loads (or checks) clean
    assert main([command, str(data), "--partition-key", "a", "--sort-key", "",
                 *(["--out", str(tmp_path / "out")] if command == "ingest" else [])]) == 0


def test_utf16_set_on_a_file_without_its_bom_names_the_setting(tmp_path: Path, capsys) -> None:
    # The reverse of a UTF-16 file read as utf-8: a UTF-8 file with --encoding utf-16
    data = tmp_path / "u8.csv"
    data.write_text("account,offer_id\na,1\n", encoding="utf-8")
    assert main(["check", str(data), "--encoding", "utf-16"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"fanout check: error: {data}: the encoding is set to utf-16, but the file does not start with a "
        "UTF-16 byte order mark (UTF-16 is read only with one): leave it unset, or set utf-8 or latin-1 "
        "(--encoding, or [source] encoding in the spec)")


def test_ingest_into_a_stack_that_does_not_exist_or_without_credentials_says_so(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.csv"
    data.write_text("account,offer_id\na,1\n")
    # No such stack: one line naming it and where it was looked for (no botocore text)
    with mock_aws():
        assert main(["ingest", str(data), "--stack", "no-such-stack"]) == 1
    assert one_line(capsys.readouterr().err) == (
        "fanout ingest: error: no stack 'no-such-stack' in AWS (us-east-1): check --stack (the `fanout "
        "serve` banner names it) and the endpoint (--endpoint-url, else AWS_ENDPOINT_URL, else AWS)")
    # No credentials: the same line `fanout status` gives
    done = fanout("ingest", str(data), "--stack", "fanout")
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        "fanout ingest: error: cannot describe stack 'fanout' in AWS (us-east-1): no AWS credentials found: "
        "set AWS_PROFILE")
