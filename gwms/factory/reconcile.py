"""Bring the journal in line with the clouds: on start and at the top of every cycle.

1. Batches left `launching` (a crash, or a call whose outcome is unknown) are settled by
   a tag lookup (`find_batch`), never by launching again: found -> launched; nothing found
   and the batch older than the listing grace -> failed, so the next decision launches
   anew (moto ignores ClientToken, so only the lookup can prove a call did not happen).
2. One paginated listing per provider (O(pages), DESIGN.md §5) is compared with the
   journal (`decisions.diff_listing`): state changes, VMs gone, VMs of journaled batches
   the journal lacks (adopted), and VMs tagged by this factory whose batch it never
   journaled (orphans: terminated, they hold credentials nobody accounts for).
A provider whose listing fails this cycle is skipped: nothing of it is marked gone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gwms.factory.decisions import (
    Policy,
    Termination,
    cloud_state,
    diff_listing,
    settle_launching,
)
from gwms.factory.journal import (
    BatchState,
    GlideinRecord,
    GlideinState,
    GlideinUpdate,
    Journal,
    NewGlidein,
    epoch,
)
from gwms.factory.providers.base import Instance, Provider, ProviderError

log = logging.getLogger("gwms.factory.reconcile")

DEFAULT_POLICY = Policy()
ProviderLookup = Callable[[str], Provider | None]


@dataclass
class ReconcileReport:
    """What reconciling changed; `broken` VMs are for the daemon's terminate path."""

    launched: list[str] = field(default_factory=list)  # batches found by tag
    failed: list[str] = field(default_factory=list)  # batches proven not launched
    unsettled: list[str] = field(default_factory=list)  # lookups to repeat next cycle
    transitions: int = 0
    gone: int = 0
    adopted: int = 0
    orphans_terminated: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # provider keys whose listing failed
    broken: list[Termination] = field(default_factory=list)


def new_glideins(instances: list[Instance]) -> list[NewGlidein]:
    """Journal rows for VMs the cloud reported."""
    return [
        NewGlidein(
            batch_id=i.batch_id,
            launch_index=i.launch_index,
            cloud_id=i.cloud_id,
            state=cloud_state(i),
            launched_at=epoch(i.launched_at) if i.launched_at else 0,
        )
        for i in instances
    ]


def settle_launching_batches(
    journal: Journal,
    provider_for: ProviderLookup,
    *,
    factory: str,
    now: int,
    policy: Policy,
    report: ReconcileReport,
) -> None:
    """Settle every `launching` batch by looking its VMs up by tag."""
    for batch in journal.batches(BatchState.LAUNCHING):
        where = f"entry={batch.entry} client={batch.client} batch={batch.batch_id}"
        provider = provider_for(batch.provider_key)
        if provider is None:
            log.warning("%s: launching batch left unsettled: no provider for %s",
                        where, batch.provider_key)  # fmt: skip
            report.unsettled.append(batch.batch_id)
            continue
        try:
            found = provider.find_batch(factory, batch.batch_id)
            confirmed_absent = now - batch.created_at >= policy.listing_grace
        except ProviderError as exc:
            log.warning("%s: tag lookup failed (%s); trying again next cycle", where, exc)
            found, confirmed_absent = [], False
        outcome = settle_launching(found, confirmed_absent)
        if outcome == "launched":
            rows = [
                g if g.launched_at else _stamped(g, batch.created_at) for g in new_glideins(found)
            ]
            journal.record_launch(batch.batch_id, rows, now)
            log.info("%s: launch confirmed by tag lookup: %d VMs", where, len(found))
            report.launched.append(batch.batch_id)
        elif outcome == "failed":
            journal.fail_batch(batch.batch_id, "no VM found by tag: the call did not happen", now)
            log.info("%s: no VM found by tag; marked failed, a new batch may be launched", where)
            report.failed.append(batch.batch_id)
        else:
            report.unsettled.append(batch.batch_id)


def _stamped(glidein: NewGlidein, launched_at: int) -> NewGlidein:
    return NewGlidein(
        glidein.batch_id, glidein.launch_index, glidein.cloud_id, glidein.state, launched_at
    )


def reconcile(
    journal: Journal,
    providers: Mapping[str, Provider],
    *,
    factory: str,
    now: int,
    policy: Policy = DEFAULT_POLICY,
    provider_for: ProviderLookup | None = None,
) -> ReconcileReport:
    """Settle launching batches, then compare each provider's listing with the journal."""
    report = ReconcileReport()
    settle_launching_batches(
        journal,
        provider_for or providers.get,
        factory=factory,
        now=now,
        policy=policy,
        report=report,
    )
    batches = journal.batch_index()
    key_of_batch = {b.batch_id: b.provider_key for b in batches.values()}
    by_key: dict[str, list[GlideinRecord]] = defaultdict(list)
    for record in journal.glideins():
        by_key[record.provider_key].append(record)
    updates: list[GlideinUpdate] = []
    adopt: list[Instance] = []
    for key, provider in providers.items():
        try:
            listing = provider.list(factory)
        except ProviderError as exc:
            log.warning("provider %s: listing failed (%s); its VMs are left as they are", key, exc)
            report.unlisted.append(key)
            continue
        mine = [i for i in listing if key_of_batch.get(i.batch_id, key) == key]
        known = [b for b, k in key_of_batch.items() if k == key]
        diff = diff_listing(by_key.get(key, []), mine, known, now, policy)
        for t in diff.transitions:
            updates.append(GlideinUpdate(t.glidein_id, state=t.state))
            report.gone += t.state is GlideinState.GONE
        adopt += diff.adopt
        report.broken += diff.broken
        if diff.orphans:
            _terminate_orphans(provider, key, diff.orphans, report)
    journal.update(updates, now)
    report.transitions = len(updates)
    if adopt:
        journal.adopt(new_glideins(adopt), now)
        for inst in adopt:
            log.info("entry=%s client=%s glidein=%s: adopted VM %s listed by the cloud",
                     inst.entry, inst.client, inst.glidein_id, inst.cloud_id)  # fmt: skip
        report.adopted = len(adopt)
    return report


def _terminate_orphans(
    provider: Provider, key: str, orphans: list[Instance], report: ReconcileReport
) -> None:
    for inst in orphans:
        log.warning("entry=%s client=%s glidein=%s: VM %s is tagged by this factory but its"
                    " batch was never journaled; terminating it",
                    inst.entry, inst.client, inst.glidein_id, inst.cloud_id)  # fmt: skip
    try:
        result = provider.terminate([i.cloud_id for i in orphans])
    except ProviderError as exc:
        log.warning("provider %s: terminating %d orphans failed (%s); next cycle tries again",
                    key, len(orphans), exc)  # fmt: skip
        return
    report.orphans_terminated += list(result.accepted)
    for cid, why in result.failed.items():
        log.warning("provider %s: orphan VM %s refused to terminate: %s", key, cid, why)


__all__ = ["ReconcileReport", "new_glideins", "reconcile", "settle_launching_batches"]
