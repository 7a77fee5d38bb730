"""The saved-agents schema's history as Alembic migrations, applied at start-up (`database.py`).

A new column or index is a new file in `versions/` whose `down_revision` is the newest one's.
"""
