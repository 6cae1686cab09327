"""How many times the current attempt of a message was started (``DJQUEUE_MAX_DELIVERIES``)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('djqueue', '0003_byte_order_ids'),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='deliveries',
            field=models.PositiveIntegerField(default=0, help_text='Times this attempt was started. An acks_late message whose worker is lost goes back to the queue until this reaches DJQUEUE_MAX_DELIVERIES, then is set aside.'),
        ),
    ]
