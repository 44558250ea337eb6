"""The DynamoDB data model shared by the writer (which fills it) and the inbox (which reads it).

See ``docs/architecture.md`` for the tables, keys and indexes, and what each access costs.
"""
