# The steps of long chains that their messages do not carry (djqueue.workflow.models.ChainSegment).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0014_result_workers"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChainSegment",
            fields=[
                ("id", models.CharField(max_length=255, primary_key=True, serialize=False, verbose_name="segment id")),
                ("content_type", models.CharField(default="application/json", max_length=64, verbose_name="content type")),
                ("steps", models.TextField(help_text="Signatures in Celery's chain order, the next one last; the first may refer to the next segment (the task serializer's).")),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created at")),
            ],
            options={
                "verbose_name": "chain segment",
                "db_table": "djqueue_chainsegment",
            },
        ),
    ]
