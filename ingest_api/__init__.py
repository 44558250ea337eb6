"""The ingest edge: authenticate, rate-limit, validate, enqueue to SQS; answer 2xx only after SQS has it."""
