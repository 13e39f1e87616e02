"""Database access: URLs, engine, schema, migrations, partitions, embedded server."""
