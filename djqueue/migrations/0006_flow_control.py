"""Flow control (djqueue.flow): the gate of limited tasks, unique task keys, paused queues, the
concurrency key of a message; and one message per task id.

The task id index becomes unique. Messages written twice under one id before this migration
(the same ``task_id`` given twice made two rows) are made one: of each id the row a worker holds,
else the oldest, stays; the other rows, which wait or were set aside, are deleted. Two held rows
of one id (both running now) stop the migration: run it again once they finished.
"""

from django.db import migrations, models
from django.db.models import Count, Min

HELD = ("reserved", "started")


def one_message_per_task_id(apps, schema_editor):
    Message = apps.get_model("djqueue", "Message")
    rows = Message.objects.using(schema_editor.connection.alias)
    twice = (rows.values("task_id").annotate(n=Count("id"), first=Min("id")).filter(n__gt=1))
    for entry in twice.iterator():
        same = rows.filter(task_id=entry["task_id"])
        held = list(same.filter(state__in=HELD).values_list("id", flat=True))
        if len(held) > 1:
            raise RuntimeError(
                f"Messages {held} share the task id {entry['task_id']!r} and are all held by "
                "workers now; run this migration again once they finished.")
        keep = held[0] if held else entry["first"]
        same.exclude(id=keep).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0005_workflow"),
    ]

    operations = [
        migrations.CreateModel(
            name='FlowGate',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('task_name', models.CharField(max_length=255, unique=True, verbose_name='task name')),
                ('next_start', models.DateTimeField(blank=True, null=True, verbose_name='next start')),
            ],
            options={
                'verbose_name': 'flow gate',
                'db_table': 'djqueue_flow_gate',
            },
        ),
        migrations.CreateModel(
            name='PausedQueue',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('queue', models.CharField(max_length=200, unique=True)),
                ('paused_at', models.DateTimeField(auto_now_add=True, verbose_name='paused')),
            ],
            options={
                'verbose_name': 'paused queue',
                'db_table': 'djqueue_paused_queue',
            },
        ),
        migrations.CreateModel(
            name='UniqueTask',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('task_name', models.CharField(max_length=255, verbose_name='task name')),
                ('key', models.CharField(max_length=255)),
                ('task_id', models.CharField(max_length=255, verbose_name='task id')),
                ('mode', models.CharField(choices=[('waiting', 'while waiting'), ('running', 'while waiting or running'), ('period', 'for a period')], max_length=10)),
                ('until', models.DateTimeField(blank=True, help_text="The end of a period's hold.", null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True, verbose_name='created')),
            ],
            options={
                'verbose_name': 'unique task key',
                'db_table': 'djqueue_unique_task',
            },
        ),
        migrations.RemoveIndex(
            model_name='message',
            name='djqueue_msg_task_id',
        ),
        migrations.AddField(
            model_name='message',
            name='flow_key',
            field=models.CharField(blank=True, default=None, help_text='Of a task with a concurrency limit: at most that many of one key run at once.', max_length=255, null=True, verbose_name='concurrency key'),
        ),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('flow_key__isnull', False), ('state', 'started')), fields=['task_name', 'flow_key'], name='djqueue_msg_flow_running'),
        ),
        migrations.RunPython(one_message_per_task_id, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='message',
            constraint=models.UniqueConstraint(fields=('task_id',), name='djqueue_msg_task_id'),
        ),
        migrations.AddConstraint(
            model_name='uniquetask',
            constraint=models.UniqueConstraint(fields=('task_name', 'key'), name='djqueue_unique_task_key'),
        ),
    ]
