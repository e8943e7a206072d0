"""Which AWS a command talks to, decided in one place (fanout_cli/target.py)."""

from __future__ import annotations

from fanout_cli.target import DEFAULT_STACK, describe, endpoint_variables, resolve

SERVE = "http://127.0.0.1:4566"


def test_no_stack_and_no_endpoint_is_the_embedded_runtime_whatever_the_environment_exports():
    env = {"AWS_ENDPOINT_URL": SERVE, "AWS_ENDPOINT_URL_S3": SERVE, "AWS_DEFAULT_REGION": "eu-west-1"}
    target = resolve(env=env)
    assert target.embedded and target.endpoint_url is None
    # It says what it ignored, once, with the fix
    assert target.ignored == ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    assert target.line() == ("target: the embedded runtime (moto in this process); AWS_ENDPOINT_URL, "
                             "AWS_ENDPOINT_URL_S3 ignored (add --stack NAME to load into that stack)")
    assert resolve(env={}).line() == "target: the embedded runtime (moto in this process)"


def test_a_stack_takes_the_endpoint_from_the_flag_then_the_environment_then_aws():
    flag = resolve(stack="s", endpoint_url="http://127.0.0.1:1", env={"AWS_ENDPOINT_URL": SERVE})
    assert (flag.stack, flag.endpoint_url, flag.endpoint_from) == ("s", "http://127.0.0.1:1", "--endpoint-url")
    exported = resolve(stack="s", env={"AWS_ENDPOINT_URL": SERVE, "AWS_REGION": "eu-west-1"})
    assert (exported.endpoint_url, exported.endpoint_from, exported.region) == (
        SERVE, "AWS_ENDPOINT_URL", "eu-west-1")
    assert exported.line() == f"target: stack 's' at {SERVE}, eu-west-1 (AWS_ENDPOINT_URL)"
    aws = resolve(stack="s", env={})
    assert aws.endpoint_url is None and aws.line() == "target: stack 's' in AWS, us-east-1"


def test_an_endpoint_without_a_stack_means_the_stack_serve_deploys():
    target = resolve(endpoint_url=SERVE, env={})
    assert not target.embedded and target.stack == DEFAULT_STACK == "fanout"
    assert target.line() == (f"target: stack 'fanout' at {SERVE}, us-east-1 (--endpoint-url) "
                             "(the default name; --stack NAME for another)")
    # A command with no embedded runtime (status --follow, the replayer) takes the stack
    # from the exported endpoint too
    follow = resolve(embedded=False, env={"AWS_ENDPOINT_URL": SERVE})
    assert (follow.stack, follow.endpoint_url) == ("fanout", SERVE)


def test_the_json_form_names_the_same_target():
    target = resolve(stack="s", endpoint_url=SERVE, region="us-west-2", env={})
    assert target.as_dict() == {"runtime": "stack", "stack": "s", "endpoint_url": SERVE,
                                "region": "us-west-2"}
    assert describe(target.as_dict()) == f"stack 's' at {SERVE}, us-west-2"
    assert describe(resolve(env={}).as_dict()) == "the embedded runtime (moto in this process)"


def test_only_set_endpoint_variables_count():
    assert endpoint_variables({"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URLS": "x", "PATH": "/bin",
                               "AWS_ENDPOINT_URL_SQS": SERVE}) == {"AWS_ENDPOINT_URL_SQS": SERVE}
