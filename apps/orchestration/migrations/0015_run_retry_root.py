from django.db import migrations, models


def retry_roots_fill(apps, schema_editor):
    """Give every retry stored before this migration the first run of its chain.
    An original has a smaller id than its retries, so walking the retries by id
    meets each one's original (when it is a retry itself) before it."""
    PipelineRun = apps.get_model("orchestration", "PipelineRun")
    retries = PipelineRun.objects.filter(retry_of__isnull=False).order_by("pk").values_list("pk", "retry_of_id")
    roots: dict[int, int] = {}
    for pk, original in retries.iterator():
        roots[pk] = roots.get(original, original)
    chains: dict[int, list[int]] = {}
    for pk, root in roots.items():
        chains.setdefault(root, []).append(pk)
    for root, members in chains.items():
        for start in range(0, len(members), 500):
            PipelineRun.objects.filter(pk__in=members[start:start + 500]).update(retry_root=root)


class Migration(migrations.Migration):

    # Numbered 0015: a migration 0014 is being written on another branch at the same time.
    dependencies = [
        ('orchestration', '0014_monitor_state_and_notices'),
    ]

    operations = [
        migrations.AddField(
            model_name='pipelinerun',
            name='retry_root',
            field=models.BigIntegerField(blank=True, help_text='For a retry: the id of the first run of its retry chain (for a retry of a retry of run 7: 7). Its notify nodes key their deliveries with it, so a receiver drops what that run sent already. A number, not a link: pruning that run changes no key.', null=True),
        ),
        migrations.RunPython(retry_roots_fill, migrations.RunPython.noop, elidable=True),
    ]
