"""The CloudFormation templates: they lint clean, and the data stack, deployed into moto's
CloudFormation, creates exactly the queues and tables the code expects."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from cfnlint.decode import decode_str

from ingest_api.batcher import SQS_MAX_REQUEST_BYTES
from shared.ops.resources import QUEUE_MAXIMUM_MESSAGE_SIZE, table_specs
from shared.settings import settings_from_env
from tests.conftest import ROOT, Stack

TEMPLATES = sorted((ROOT / "infra").glob("*.yaml"))


def test_every_template_passes_cfn_lint() -> None:
    assert TEMPLATES
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), *map(str, TEMPLATES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _shape(table: dict[str, Any]) -> dict[str, Any]:
    """What the code relies on: keys, attribute types and indexes."""
    return {
        "keys": sorted((k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]),
        "attributes": sorted((a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]),
        "indexes": sorted(
            (
                i["IndexName"],
                tuple(sorted((k["AttributeName"], k["KeyType"]) for k in i["KeySchema"])),
                i["Projection"]["ProjectionType"],
            )
            for i in table.get("GlobalSecondaryIndexes", [])
        ),
    }


async def _deploy_and_describe(endpoint: str, prefix: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    session = get_session()
    common: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }
    async with (
        session.create_client("cloudformation", **common) as cfn,
        session.create_client("dynamodb", **common) as dynamodb,
        session.create_client("sqs", **common) as sqs,
    ):
        await cfn.create_stack(
            StackName=f"data-{prefix}",
            TemplateBody=(ROOT / "infra" / "data.yaml").read_text(),
            Parameters=[
                {"ParameterKey": "ResourcePrefix", "ParameterValue": prefix},
                {"ParameterKey": "VisibilityTimeoutSeconds", "ParameterValue": "45"},
                {"ParameterKey": "MaxReceiveCount", "ParameterValue": "7"},
            ],
        )
        for _ in range(100):
            status = (await cfn.describe_stacks(StackName=f"data-{prefix}"))["Stacks"][0]["StackStatus"]
            if status.endswith("COMPLETE") or status.endswith("FAILED"):
                break
            await asyncio.sleep(0.1)
        assert status == "CREATE_COMPLETE", status
        tables = {}
        ttl = {}
        for name in (await dynamodb.list_tables())["TableNames"]:
            if name.startswith(f"{prefix}-"):
                tables[name] = (await dynamodb.describe_table(TableName=name))["Table"]
                described = await dynamodb.describe_time_to_live(TableName=name)
                ttl[name] = described.get("TimeToLiveDescription", {}).get("AttributeName")
        url = (await sqs.get_queue_url(QueueName=f"{prefix}-events"))["QueueUrl"]
        attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    return tables, ttl, {str(k): v for k, v in attributes.items()}


def test_the_data_stack_creates_what_the_code_expects(stack: Stack) -> None:
    prefix = f"cf{uuid.uuid4().hex[:6]}"
    endpoint = stack.settings.aws_endpoint_url
    assert endpoint
    tables, ttl, queue = asyncio.run(_deploy_and_describe(endpoint, prefix))
    template, _ = decode_str((ROOT / "infra" / "data.yaml").read_text())
    template_ttl = {
        str(resource["Properties"]["TableName"]["Fn::Sub"]).removeprefix("${ResourcePrefix}-"): resource["Properties"]
        .get("TimeToLiveSpecification", {})
        .get("AttributeName")
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }
    settings = settings_from_env({**stack.env, "TRIGGERS_RESOURCE_PREFIX": prefix})
    expected = {spec["TableName"]: spec for spec in table_specs(settings)}
    assert set(tables) == set(expected)
    for name, spec in expected.items():
        assert _shape(tables[name]) == _shape(spec), name
        # moto's CloudFormation does not apply TimeToLiveSpecification, so the template is
        # read for it; what moto deployed is checked for everything else.
        assert template_ttl[name.removeprefix(f"{prefix}-")] == spec["ttl"], name
        assert ttl[name] in (None, spec["ttl"]), name
    assert queue["VisibilityTimeout"] == "45"
    redrive = json.loads(queue["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 7
    assert redrive["deadLetterTargetArn"].endswith(f":{prefix}-events-dlq")


def _services() -> dict[str, Any]:
    template, _ = decode_str((ROOT / "infra" / "services.yaml").read_text())
    resources: dict[str, Any] = template["Resources"]
    return resources


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == kind}


def test_the_public_listener_is_https_and_plain_http_is_refused_with_the_error_shape() -> None:
    resources = _services()
    listeners = _of_type(resources, "AWS::ElasticLoadBalancingV2::Listener")
    https = [p for p in listeners.values() if p["Protocol"] == "HTTPS"]
    plain = [p for p in listeners.values() if p["Protocol"] == "HTTP"]
    assert len(https) == 1, listeners
    assert len(plain) == 1, listeners
    assert https[0]["Port"] == 443
    assert https[0]["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert https[0]["SslPolicy"] == {"Ref": "SslPolicy"}
    template, _ = decode_str((ROOT / "infra" / "services.yaml").read_text())
    assert template["Parameters"]["SslPolicy"]["Default"].startswith("ELBSecurityPolicy-TLS13-")
    # Port 80 neither forwards nor redirects (a 301 turns POST into GET and keeps clients
    # sending keys in clear): a 403 in the contract's error shape.
    assert plain[0]["Port"] == 80
    (refusal,) = plain[0]["DefaultActions"]
    assert refusal["Type"] == "fixed-response"
    config = refusal["FixedResponseConfig"]
    assert config["StatusCode"] == "403"
    assert config["ContentType"] == "application/json"
    assert json.loads(config["MessageBody"]) == {
        "status": 403,
        "error_code": "HTTPS_REQUIRED",
        "message": "Use https://",
        "details": [],
        "correlation_id": "",
    }
    # Every rule that forwards hangs on the HTTPS listener; nothing forwards plain HTTP.
    https_name = next(name for name, p in listeners.items() if p["Protocol"] == "HTTPS")
    for rule in _of_type(resources, "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        assert rule["ListenerArn"] == {"Ref": https_name}
    assert template["Outputs"]["Url"]["Value"]["Fn::Sub"].startswith("https://")


def test_the_tasks_admit_the_load_balancer_only_and_no_address_reaches_an_admin_port() -> None:
    resources = _services()
    groups = _of_type(resources, "AWS::EC2::SecurityGroup")
    rules = {
        (r["IpProtocol"], r["FromPort"], r["ToPort"], json.dumps(r.get("SourceSecurityGroupId")), r.get("CidrIp"))
        for r in groups["ServiceSecurityGroup"]["SecurityGroupIngress"]
    }
    balancer = json.dumps({"Ref": "LoadBalancerSecurityGroup"})
    assert rules == {("tcp", 8000, 8001, balancer, None), ("tcp", 9000, 9001, balancer, None)}
    # No rule anywhere in the template (inline or standalone) opens an admin port to addresses.
    standalone = _of_type(resources, "AWS::EC2::SecurityGroupIngress").values()
    inline = [r for g in groups.values() for r in g.get("SecurityGroupIngress", [])]
    for rule in [*standalone, *inline]:
        opens_admin = int(rule.get("FromPort", 0)) <= 9001 and int(rule.get("ToPort", 65535)) >= 9000
        if opens_admin:
            assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & set(rule), rule
    # The listeners' own group is what faces the internet: HTTPS, and port 80 for the 403.
    public = {
        (r["FromPort"], r["ToPort"], r.get("CidrIp"))
        for r in groups["LoadBalancerSecurityGroup"]["SecurityGroupIngress"]
    }
    assert public == {(443, 443, "0.0.0.0/0"), (80, 80, "0.0.0.0/0")}


def test_the_http_tasks_bind_their_admin_listener_where_the_health_check_reaches() -> None:
    """The admin listener binds loopback unless told; the ALB's health check needs more."""
    for name in ("IngestTask", "InboxTask"):
        (container,) = _services()[name]["Properties"]["ContainerDefinitions"]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["TRIGGERS_ADMIN_HOST"] == "0.0.0.0", name  # noqa: S104 - what the template must say


def test_the_load_balancer_routes_no_admin_port_and_checks_readiness_there() -> None:
    resources = _services()
    groups = _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup")
    tasks = _of_type(resources, "AWS::ECS::TaskDefinition")
    admin_of = {}
    for task in tasks.values():
        (container,) = task["ContainerDefinitions"]
        command = container["Command"]
        if "--admin-port" in command:
            public = command[command.index("--port") + 1]
            admin_of[int(public)] = int(command[command.index("--admin-port") + 1])
    assert set(admin_of) == {8000, 8001}
    for group in groups.values():
        admin = admin_of[group["Port"]]
        assert admin != group["Port"]
        assert group["HealthCheckPort"] == str(admin)
        assert group["HealthCheckPath"] == "/ready"
    # What the listeners forward to is the public port of each service, never the admin one.
    for service in _of_type(resources, "AWS::ECS::Service").values():
        for balancer in service.get("LoadBalancers", []):
            assert balancer["ContainerPort"] in admin_of


def _writer_env(services: dict[str, Any]) -> list[dict[str, Any]]:
    """The writer's environment, as the ECS task and as the Lambda function (name -> value)."""
    task = services["Resources"]["WriterTask"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    function = services["Resources"]["WriterFunction"]["Properties"]["Environment"]["Variables"]
    return [{e["Name"]: e["Value"] for e in task}, dict(function)]


def test_the_writer_gets_the_queues_own_visibility_timeout() -> None:
    """Its heartbeat renews a batch every third of the timeout it believes the queue has."""
    data, _ = decode_str((ROOT / "infra" / "data.yaml").read_text())
    services, _ = decode_str((ROOT / "infra" / "services.yaml").read_text())
    assert data["Resources"]["EventsQueue"]["Properties"]["VisibilityTimeout"] == {"Ref": "VisibilityTimeoutSeconds"}
    exported = data["Outputs"]["VisibilityTimeoutSeconds"]
    assert exported["Value"] == {"Ref": "VisibilityTimeoutSeconds"}
    assert exported["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-VisibilityTimeoutSeconds"}
    for env in _writer_env(services):
        assert env["TRIGGERS_QUEUE_VISIBILITY_TIMEOUT_S"] == {
            "Fn::ImportValue": {"Fn::Sub": "${DataStackName}-VisibilityTimeoutSeconds"}
        }


def test_both_queues_take_messages_of_1_mib_as_the_edge_packs_them() -> None:
    """Set, not left to SQS's default: queues made before SQS raised it keep 256 KiB, and the
    edge packs messages up to 1 MiB (``triggers init`` sets the same on local queues)."""
    data, _ = decode_str((ROOT / "infra" / "data.yaml").read_text())
    queues = _of_type(data["Resources"], "AWS::SQS::Queue")
    assert set(queues) == {"DeadLetterQueue", "EventsQueue"}
    for name, properties in queues.items():
        assert properties.get("MaximumMessageSize") == QUEUE_MAXIMUM_MESSAGE_SIZE == SQS_MAX_REQUEST_BYTES, name
