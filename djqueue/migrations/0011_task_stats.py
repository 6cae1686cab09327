"""Per-minute task statistics written by workers with their heartbeat (djqueue.stats)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0008_mysql"),
    ]

    operations = [
        migrations.CreateModel(
            name='TaskStat',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('minute', models.DateTimeField(help_text="Start of the minute (UTC), by the worker's clock.")),
                ('worker', models.BigIntegerField(help_text='Id of the worker row that counted; 0 for totals.')),
                ('queue', models.CharField(max_length=200)),
                ('task_name', models.CharField(max_length=255, verbose_name='task name')),
                ('state', models.CharField(max_length=50)),
                ('count', models.PositiveBigIntegerField(default=0)),
                ('runtime_sum', models.FloatField(default=0.0, help_text='Seconds, all counted.', verbose_name='runtime sum')),
                ('le_1ms', models.PositiveBigIntegerField(default=0)),
                ('le_5ms', models.PositiveBigIntegerField(default=0)),
                ('le_10ms', models.PositiveBigIntegerField(default=0)),
                ('le_25ms', models.PositiveBigIntegerField(default=0)),
                ('le_50ms', models.PositiveBigIntegerField(default=0)),
                ('le_100ms', models.PositiveBigIntegerField(default=0)),
                ('le_250ms', models.PositiveBigIntegerField(default=0)),
                ('le_500ms', models.PositiveBigIntegerField(default=0)),
                ('le_1000ms', models.PositiveBigIntegerField(default=0)),
                ('le_2500ms', models.PositiveBigIntegerField(default=0)),
                ('le_5000ms', models.PositiveBigIntegerField(default=0)),
                ('le_10000ms', models.PositiveBigIntegerField(default=0)),
                ('le_30000ms', models.PositiveBigIntegerField(default=0)),
                ('le_60000ms', models.PositiveBigIntegerField(default=0)),
                ('le_300000ms', models.PositiveBigIntegerField(default=0)),
                ('le_inf', models.PositiveBigIntegerField(default=0)),
            ],
            options={
                'verbose_name': 'task statistic',
                'db_table': 'djqueue_taskstat',
                'constraints': [models.UniqueConstraint(fields=('minute', 'worker', 'queue', 'task_name', 'state'), name='djqueue_taskstat_key')],
            },
        ),
    ]
