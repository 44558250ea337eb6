"""API keys: the key format and stored record, the store port and its DynamoDB adapter, the
authenticator both services use, and the key administration the CLI calls."""
