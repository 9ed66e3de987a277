"""Every storage test runs on SQLite and on the real PostgreSQL: the ``db_url`` and ``db`` fixtures live in
``tests/conftest.py`` so that the worker's state-machine tests use them too."""
