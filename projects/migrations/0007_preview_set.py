from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0006_job_liveness"),
    ]

    operations = [
        migrations.AddField(
            model_name="videoproject",
            name="preview_set",
            field=models.CharField(blank=True, default="", editable=False, max_length=40),
        ),
    ]
