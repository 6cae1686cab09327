# The workers of every attempt of a retried task (Django's TaskResult.worker_ids, one per attempt).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0013_message_body_lz4"),
    ]

    operations = [
        migrations.AddField(
            model_name="taskresult",
            name="workers",
            field=models.TextField(blank=True, default="", help_text="Node names of the workers of each attempt, oldest first, one a line, once it was retried (blank: one attempt, by its worker).", verbose_name="workers of its attempts"),
        ),
    ]
