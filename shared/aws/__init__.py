"""The AWS transport: client construction (timeouts, retries, endpoints), the lean JSON-protocol
client of the hot paths with its SigV4 signer and HTTP/1.1 pool.

- ``clients``: ``open_clients(settings)`` gives ``AwsClients(sqs, dynamodb)``, and counts every
  request by "service.Operation" in ``AWS_REQUESTS``.
- ``sqs`` / ``dynamodb``: ``LeanSqs`` and ``LeanDynamoDB``, one explicit, typed method per hot
  operation (named and typed as aiobotocore's own, with types-aiobotocore's TypedDicts), plus
  ``*_decoded`` forms that decode the answer into a msgspec type. Operations are constants
  (``dynamodb.QUERY``), never strings passed around.
- Every other (cold) operation (tables, queue URLs and attributes, single sends, scans) goes to
  aiobotocore through the same object's ``admin`` attribute, typed as aiobotocore's client:
  ``clients.dynamodb.admin.describe_table(...)``, ``clients.sqs.admin.get_queue_url(...)``.
  So a component handed one client reaches both, and a hot call can never fall through to
  aiobotocore's millisecond by a typo: an operation not on the lean class does not type-check.
- ``lean``: the transport under both (signing, retries, request counting, botocore's
  ``ClientError`` shape); ``sigv4`` and ``http1`` under it.
"""
