"""Database access: URLs, engine, schema, migrations, partitions, embedded server, and the
repositories (``*_repo``, ``*_views``): every SQL statement of the headend."""
