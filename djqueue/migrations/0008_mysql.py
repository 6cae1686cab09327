"""MySQL and MariaDB: utf8mb4 tables, identifiers compared byte by byte, the message table's
indexes as MySQL can have them. Nothing changes on PostgreSQL or SQLite, nor in the model state.

- Every djqueue table is utf8mb4 (a database created as utf8mb3 or latin1 would refuse 4-byte
  UTF-8, an emoji in a task's arguments' repr, say).
- Task ids, task names and queue names are ``utf8mb4_bin``: identifiers, compared as on
  PostgreSQL (``COLLATE "C"``, migration 0003) and SQLite. Under a ``_ci`` collation two task ids
  that differ in case would be one result, and a worker for queue ``low`` would take ``Low``'s
  messages. A later migration that alters one of these fields must give the collation back here.
- MySQL has no partial indexes: Django creates the message table's ``WHERE state = …`` indexes
  over every row, without the state. Here they lead with ``state`` instead, so that the claim
  reads the ready rows of a queue in its order (``state, queue, priority DESC, id``) and stops
  after ``LIMIT`` rows; ``djqueue_msg_rejected`` (``state, queue``) would repeat the start of
  that index, and every claim and acknowledgement would pay for it: it is dropped. A later
  migration that removes or changes one of these indexes must not touch them on MySQL.
"""

from django.db import migrations

#: Columns compared byte by byte, and their lengths.
IDENTIFIERS = {
    "djqueue_message": {"task_id": 255, "task_name": 255, "queue": 200},
    "djqueue_taskresult": {"task_id": 255, "task_name": 255, "queue": 200},
    "djqueue_revocation": {"task_id": 255},
    "djqueue_rate_limit_override": {"task_name": 255},
}
#: The message table's indexes: name -> (Django's columns, MySQL's columns).
INDEXES = {
    "djqueue_msg_ready": ("queue, priority DESC, id", "state, queue, priority DESC, id"),
    "djqueue_msg_waiting": ("queue, available_at", "state, queue, available_at"),
    "djqueue_msg_held": ("lease_until", "state, lease_until"),
    "djqueue_msg_rejected": ("queue", None),
}


def _tables(apps):
    return [model._meta.db_table for model in apps.get_app_config("djqueue").get_models()]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "mysql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_collation NOT LIKE 'utf8mb4%'")
        narrow = {row[0] for row in cursor.fetchall()}
    for table in _tables(apps):
        if table in narrow:
            schema_editor.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4")
    for table, columns in IDENTIFIERS.items():
        changes = ", ".join(f"MODIFY {column} varchar({length}) CHARACTER SET utf8mb4 "
                            "COLLATE utf8mb4_bin NOT NULL" for column, length in columns.items())
        schema_editor.execute(f"ALTER TABLE {table} {changes}")
    _indexes(schema_editor, mysql=True)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "mysql":
        return
    for table, columns in IDENTIFIERS.items():
        changes = ", ".join(f"MODIFY {column} varchar({length}) NOT NULL"
                            for column, length in columns.items())
        schema_editor.execute(f"ALTER TABLE {table} {changes}")
    _indexes(schema_editor, mysql=False)


def _indexes(schema_editor, mysql):
    changes = []
    for name, (django, ours) in INDEXES.items():
        before, after = (django, ours) if mysql else (ours, django)
        if before:
            changes.append(f"DROP INDEX {name}")
        if after:
            changes.append(f"ADD INDEX {name} ({after})")
    schema_editor.execute(f"ALTER TABLE djqueue_message {', '.join(changes)}")


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0007_events"),
    ]

    operations = [
        # DDL: MySQL cannot run it in a transaction (it commits at each statement).
        migrations.RunPython(forwards, backwards, atomic=False),
    ]
