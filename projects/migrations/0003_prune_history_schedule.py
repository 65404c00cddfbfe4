from django.db import migrations


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="Prune the event history of idle projects",
        defaults={"func": "projects.tasks.prune_history", "schedule_type": "D", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        func="projects.tasks.prune_history"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("projects", "0002_sweeper_schedule")]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
