"""Web glue of both HTTP services: errors to HTTP, request context and the canonical request
line, health and the admin listener, body reading, decoding, rate limits, OpenAPI, serving."""
