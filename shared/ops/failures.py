"""The one place that turns what an operator can fix into a one-line error and an exit code.

``triggers`` hands every exception a command raises to :func:`explain` (shared/ops/cli.py,
``TriggersGroup.invoke``): an unreachable endpoint, missing or refused credentials, queues
or tables that do not exist, a bad setting, an answer of the HTTP API. What it does not
recognise is a bug and keeps its traceback. ``--debug`` (or ``TRIGGERS_DEBUG=1``) shows the
traceback of the recognised ones too. docs/operations.md, "CLI exit codes", lists the codes.

Messages name the endpoint, operation, resource prefix or HTTP status; never a payload,
a key or an AWS error's free text beyond its code and message (which name no secret).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import httpx
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotocoreConnectionError,  # the parent of every connect failure and connect timeout
)

from triggers_client import AuthError, ConfigurationError, ConnectionFailed, RateLimited, TriggersError, Unavailable


class ExitCode(enum.IntEnum):
    """Exit codes of ``triggers`` (click itself gives 1 to its own errors and 2 to usage errors)."""

    OK = 0
    FAILED = 1  # the command ran and reports a failure (no such key, an event refused...)
    USAGE = 2  # click: a bad option or argument
    UNREACHABLE = 3  # an endpoint (AWS or a Triggers service) did not answer, or answered "unavailable"
    CREDENTIALS = 4  # AWS credentials missing or refused; an API key missing or refused
    NO_RESOURCES = 5  # a queue or table does not exist: run `triggers init`
    CONFIGURATION = 6  # a TRIGGERS_* setting has a value its type refuses; a service URL the client cannot use


@dataclass(frozen=True, slots=True)
class Failure:
    message: str
    code: ExitCode


# Error codes AWS gives for a missing queue or table (SQS's JSON and query protocols differ).
MISSING_RESOURCE_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "TableNotFoundException",
    }
)
# Error codes AWS gives for credentials it does not accept, or that may not do this.
REFUSED_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "AccessDenied",
        "AccessDeniedException",
    }
)


def explain(exc: BaseException, *, resource_prefix: str) -> Failure | None:
    """The message and exit code of ``exc``; None when it is not the operator's to fix."""
    for explainer in (_aws_transport, _aws_answer, _http, _configuration):
        failure = explainer(exc, resource_prefix)
        if failure is not None:
            return failure
    return None


def _aws_transport(exc: BaseException, _: str) -> Failure | None:
    if isinstance(exc, (BotocoreConnectionError, ReadTimeoutError, ConnectionClosedError)):
        endpoint = exc.kwargs.get("endpoint_url", "?")
        return Failure(
            f"cannot reach the AWS endpoint {endpoint} ({type(exc).__name__}); check "
            "TRIGGERS_AWS_ENDPOINT_URL (or `triggers up` running) and the network",
            ExitCode.UNREACHABLE,
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Failure(
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "(or TRIGGERS_AWS_ENDPOINT_URL for a local endpoint)",
            ExitCode.CREDENTIALS,
        )
    if isinstance(exc, NoRegionError):
        return Failure("no AWS region: set TRIGGERS_AWS_REGION", ExitCode.CONFIGURATION)
    return None


def _aws_answer(exc: BaseException, resource_prefix: str) -> Failure | None:
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    code, said = error.get("Code", "?"), _one_line(error.get("Message", ""))
    where = f"{exc.operation_name}: {code}" + (f", {said}" if said else "")
    if code in MISSING_RESOURCE_CODES:
        return Failure(
            f"a queue or table of prefix {resource_prefix!r} does not exist ({where}); run `triggers init` "
            "(or check TRIGGERS_RESOURCE_PREFIX and TRIGGERS_AWS_REGION)",
            ExitCode.NO_RESOURCES,
        )
    if code in REFUSED_CREDENTIAL_CODES:
        return Failure(f"AWS refused the credentials ({where})", ExitCode.CREDENTIALS)
    return Failure(f"AWS refused the request ({where})", ExitCode.FAILED)


def _http(exc: BaseException, _: str) -> Failure | None:
    transport = exc.__cause__ if isinstance(exc, ConnectionFailed) else exc  # the client keeps httpx's as cause
    if isinstance(transport, httpx.TransportError) or isinstance(exc, ConnectionFailed):
        where = _url(transport) if isinstance(transport, httpx.TransportError) else "the service"
        return Failure(
            f"cannot reach {where} ({type(transport).__name__}); is the service running? (--ingest-url, --inbox-url)",
            ExitCode.UNREACHABLE,
        )
    if not isinstance(exc, TriggersError):
        return None
    if isinstance(exc, ConfigurationError):  # a base URL or key the client cannot use: its message says how
        return Failure(_one_line(exc.message), ExitCode.CONFIGURATION)
    said = f"{exc.status} {exc.error_code}: {_one_line(exc.message)}"
    if isinstance(exc, AuthError):
        return Failure(f"the API key was refused ({said})", ExitCode.CREDENTIALS)
    if isinstance(exc, (RateLimited, Unavailable)):
        return Failure(f"the service is unavailable ({said}); try again", ExitCode.UNREACHABLE)
    return Failure(f"the service refused the request ({said})", ExitCode.FAILED)


def _configuration(exc: BaseException, _: str) -> Failure | None:
    # shared/settings.py raises SystemExit("invalid configuration: ...") for a setting its
    # type refuses: the message is for the operator, as is.
    if isinstance(exc, SystemExit) and isinstance(exc.code, str):
        return Failure(_one_line(exc.code), ExitCode.CONFIGURATION)
    return None


def _url(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # httpx raises it when the error carries no request
        return "the service"
    return str(url.copy_with(query=None))  # without its query: a cursor is nobody's business in a terminal


def _one_line(text: str) -> str:
    return " ".join(text.split())
