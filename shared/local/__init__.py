"""The local harness: the embedded AWS endpoints (DynamoDB Local, run on Java; moto with its
patches), child processes, the state file of ``triggers up``. Development and tests only; the
image does not install moto."""
