"""The AWS transport: client construction (timeouts, retries, endpoints), the lean JSON-protocol
client of the hot paths with its SigV4 signer and HTTP/1.1 pool."""
