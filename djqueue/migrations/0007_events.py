"""The event table (``celery worker -E``, ``celery events``)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0006_flow_control"),
    ]

    operations = [
        migrations.CreateModel(
            name='Event',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('type', models.CharField(max_length=32)),
                ('hostname', models.CharField(help_text='Node name of the worker.', max_length=255)),
                ('timestamp', models.DateTimeField(db_index=True, help_text='When the worker saw it.')),
                ('task_id', models.CharField(blank=True, default='', max_length=255, verbose_name='task id')),
                ('task_name', models.CharField(blank=True, default='', max_length=255, verbose_name='task name')),
                ('fields', models.TextField(default='{}', help_text="The event's other fields, as JSON.")),
            ],
            options={
                'db_table': 'djqueue_event',
                'ordering': ['id'],
            },
        ),
    ]
