"""The seals become signed tree heads of one Merkle tree over every sealed record.

Seals made before this held Merkle roots over their own decisions and audit
events, chained by seal_hash. Their leaves are stored, so the global tree is
built from them here, in sealing order, and each seal's tree head is signed
with the installation's key. A chain that does not verify is not signed: the
migration stops and says which seal to look at.
"""

from django.db import migrations, models


def build_tree(apps, schema_editor):
    from auditapp.decisions import log, signing
    from auditapp.hashing import canonical_time
    from auditapp.decisions.verification import chain_seal_hashes

    Seal = apps.get_model("decisions", "Seal")
    seals = list(Seal.objects.order_by("index"))
    if not seals:
        return
    for position, (seal, recomputed) in enumerate(zip(seals, chain_seal_hashes(seals))):
        if seal.index != position or seal.seal_hash != recomputed:
            raise RuntimeError(
                f"Seal {seal.index} does not match the hash chain: run `manage.py verify_chain` "
                "with the previous version and settle it first. The log's seals are about to "
                "be signed, and a chain that does not hold must not be."
            )
    postgres = schema_editor.connection.vendor == "postgresql"
    if postgres:  # the append-only trigger refuses updates; this migration is the exception
        schema_editor.execute("ALTER TABLE decisions_seal DISABLE TRIGGER decisions_seal_append_only")
    frontier, size = b"", 0
    for seal in seals:
        leaves = log.seal_leaf_hashes(seal, log.KINDS[:2])  # decisions, events: all there was
        frontier, nodes, root = log.grow(frontier, size, leaves)
        first, size = size, size + len(leaves)
        signature, key_id = signing.sign(size, root, canonical_time(seal.sealed_at))
        Seal.objects.filter(pk=seal.pk).update(
            first_leaf=first,
            tree_size=size,
            root_hash=root,
            signature=signature,
            key_id=key_id,
            frontier=frontier,
            nodes=nodes,
        )
    if postgres:
        schema_editor.execute("ALTER TABLE decisions_seal ENABLE TRIGGER decisions_seal_append_only")


def refuse_with_seals(apps, schema_editor):
    if apps.get_model("decisions", "Seal").objects.exists():
        raise RuntimeError("Seals cannot go back to the hash chain once they are a signed tree.")


class Migration(migrations.Migration):
    dependencies = [("decisions", "0005_decision_salt")]

    operations = [
        migrations.AddField("seal", "first_leaf", models.BigIntegerField(null=True)),
        migrations.AddField("seal", "tree_size", models.BigIntegerField(null=True)),
        migrations.AddField("seal", "root_hash", models.CharField(max_length=64, default="")),
        migrations.AddField("seal", "signature", models.CharField(max_length=88, default="")),
        migrations.AddField("seal", "key_id", models.CharField(max_length=16, default="")),
        migrations.AddField("seal", "frontier", models.BinaryField(default=b"")),
        migrations.AddField("seal", "nodes", models.BinaryField(default=b"")),
        migrations.RunPython(build_tree, refuse_with_seals),
        migrations.RemoveField("seal", "previous_hash"),
        migrations.RemoveField("seal", "decisions_root"),
        migrations.RemoveField("seal", "events_root"),
        migrations.RemoveField("seal", "seal_hash"),
        migrations.AlterField("seal", "first_leaf", models.BigIntegerField()),
        migrations.AlterField("seal", "tree_size", models.BigIntegerField(unique=True)),
        migrations.AlterField("seal", "root_hash", models.CharField(max_length=64)),
        migrations.AlterField("seal", "signature", models.CharField(max_length=88)),
        migrations.AlterField("seal", "key_id", models.CharField(max_length=16)),
        migrations.AlterField("seal", "frontier", models.BinaryField()),
        migrations.AlterField("seal", "nodes", models.BinaryField()),
    ]
