"""Chords' pending counts (``djqueue_chord``): one row per chord until its body is written."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("djqueue", "0004_message_deliveries"),
    ]

    operations = [
        migrations.CreateModel(
            name='Chord',
            fields=[
                ('id', models.CharField(help_text="The header's group id (the members' request.group).", max_length=255, primary_key=True, serialize=False, verbose_name='chord id')),
                ('pending', models.IntegerField(help_text='Header members still to finish.')),
                ('total', models.PositiveIntegerField(help_text='Header members in all.')),
                ('failure', models.TextField(blank=True, default='', help_text="The first member failure (the body's ChordError).")),
                ('body', models.TextField(help_text="The body's signature, its chain and root id (JSON).")),
                ('members', models.TextField(help_text="The members' task ids, in header order (JSON).")),
                ('created_at', models.DateTimeField(auto_now_add=True, verbose_name='created at')),
            ],
            options={
                'verbose_name': 'chord',
                'db_table': 'djqueue_chord',
            },
        ),
    ]
