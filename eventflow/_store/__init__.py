"""The run store: schema, the batched writer, read queries and migrations."""
