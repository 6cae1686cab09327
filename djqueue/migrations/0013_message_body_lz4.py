# Message bodies compressed with lz4 rather than pglz on PostgreSQL (14 and later, when built with
# lz4): a chain's message carries the steps still to run, 140 kB for a chain of 1,000, and pglz
# spent about 10 ms compressing such a body in each step's round against under 1 ms for lz4
# (bench/canvas.py). Only values written from now on are affected; nothing is rewritten.

from django.db import migrations

COMPRESSION = "ALTER TABLE djqueue_message ALTER COLUMN body SET COMPRESSION {}"


def _has_lz4(schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                       "WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    return bool(row and row[0])


def use_lz4(apps, schema_editor):
    if _has_lz4(schema_editor):
        schema_editor.execute(COMPRESSION.format("lz4"))


def use_default(apps, schema_editor):
    if _has_lz4(schema_editor):
        schema_editor.execute(COMPRESSION.format("DEFAULT"))


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0012_worker_host"),
    ]

    operations = [
        migrations.RunPython(use_lz4, use_default, elidable=True),
    ]
