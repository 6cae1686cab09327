# The machine a worker runs on, so that a worker can tell a live namesake from the row of a
# predecessor killed on this host (heartbeat.warn_if_name_taken).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('djqueue', '0004_message_deliveries'),
    ]

    operations = [
        migrations.AddField(
            model_name='workernode',
            name='host',
            field=models.CharField(blank=True, default='', help_text='The machine it runs on (its host name).', max_length=255),
        ),
    ]
