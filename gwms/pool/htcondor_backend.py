"""Collector and Schedd over real HTCondor daemons, through the `htcondor2` bindings.

Thin on purpose: HTCondor does the keying, expiry, identity stamping and matchmaking.
claim/complete belong to condor_startd in a real pool, so they are refused here.
"""

from __future__ import annotations

from collections.abc import Sequence

import classad2

from gwms import classads
from gwms.pool.base import ANY_AD_TYPE, Constraint, PoolError

# Job attributes that have their own submit command; everything else is set with MY.<attr>.
_SUBMIT_COMMANDS = {"cmd": "executable", "arguments": "arguments", "requirements": "requirements"}


def _htcondor():  # type: ignore[no-untyped-def]
    import htcondor2

    return htcondor2


def _typed_constraint(ad_type: str, constraint: Constraint) -> str:
    expr = repr(classads.as_expr(constraint, "constraint"))
    if not ad_type or ad_type.lower() == ANY_AD_TYPE.lower():
        return expr
    return f"(MyType == {classads.quote(ad_type)}) && ({expr})"


class HTCondorCollector:
    """`Collector` backed by a condor_collector at `address` (None: the configured pool)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self._collector = _htcondor().Collector(address)

    def advertise(self, ads: Sequence[classad2.ClassAd], lifetime: int | None = None) -> int:
        """UPDATE_AD_GENERIC; the collector stamps AuthenticatedIdentity itself."""
        batch = []
        for ad in ads:
            copy = classads.copy_ad(ad)
            if lifetime is not None and "ClassAdLifetime" not in copy:
                copy["ClassAdLifetime"] = lifetime
            batch.append(copy)
        try:
            self._collector.advertise(batch, "UPDATE_AD_GENERIC")
        except Exception as exc:
            raise PoolError(
                f"advertising to the collector {self.address or '(local)'} failed: {exc}"
            ) from exc
        return len(batch)

    def query(
        self,
        ad_type: str = ANY_AD_TYPE,
        constraint: Constraint = "true",
        projection: Sequence[str] | None = None,
    ) -> list[classad2.ClassAd]:
        """Generic ads are queried as AdType.Any plus a MyType test, like condor_status -any."""
        htcondor2 = _htcondor()
        try:
            return self._collector.query(
                htcondor2.AdType.Any, _typed_constraint(ad_type, constraint), list(projection or [])
            )
        except Exception as exc:
            raise PoolError(
                f"querying the collector {self.address or '(local)'} failed: {exc}"
            ) from exc

    def invalidate(self, ad_type: str, constraint: Constraint = "true") -> int:
        """INVALIDATE_ADS_GENERIC with a query ad; returns how many ads matched just before."""
        matched = len(self.query(ad_type, constraint, ["Name"]))
        query_ad = classad2.ClassAd()
        query_ad["MyType"] = "Query"
        query_ad["TargetType"] = ad_type
        query_ad["Requirements"] = classads.as_expr(constraint, "constraint")
        try:
            self._collector.advertise([query_ad], "INVALIDATE_ADS_GENERIC")
        except Exception as exc:
            raise PoolError(
                f"invalidating ads at {self.address or '(local)'} failed: {exc}"
            ) from exc
        return matched


class HTCondorSchedd:
    """`Schedd` backed by a condor_schedd found through the collector at `address`."""

    def __init__(self, address: str | None = None, schedd_name: str | None = None) -> None:
        htcondor2 = _htcondor()
        self.address = address
        collector = htcondor2.Collector(address)
        try:
            location = collector.locate(htcondor2.DaemonType.Schedd, schedd_name)
        except Exception as exc:
            where = f"{schedd_name or '(default)'} through {address or '(local)'}"
            raise PoolError(f"cannot locate the schedd {where}: {exc}") from exc
        self._schedd = htcondor2.Schedd(location)

    def submit(self, job_ads: Sequence[classad2.ClassAd]) -> list[str]:
        """Submit each ad as a submit description; HTCondor assigns the ids."""
        htcondor2 = _htcondor()
        ids = []
        for ad in job_ads:
            description = {}
            for key in ad.keys():  # noqa: SIM118 - ClassAd iteration is via keys() in classad2
                command = _SUBMIT_COMMANDS.get(key.lower(), f"MY.{key}")
                value = ad[key]
                description[command] = (
                    value
                    if isinstance(value, str) and command != f"MY.{key}"
                    else repr(ad.lookup(key))
                )
            result = self._schedd.submit(htcondor2.Submit(description), count=1)
            ids.append(f"{result.cluster()}.0")
        return ids

    def query(
        self, constraint: Constraint = "true", projection: Sequence[str] | None = None
    ) -> list[classad2.ClassAd]:
        """condor_q -constraint."""
        expr = repr(classads.as_expr(constraint, "constraint"))
        return self._schedd.query(expr, list(projection or []))

    def remove(self, constraint: Constraint) -> int:
        """condor_rm -constraint; returns TotalSuccess."""
        htcondor2 = _htcondor()
        expr = repr(classads.as_expr(constraint, "constraint"))
        result = self._schedd.act(htcondor2.JobAction.Remove, expr)
        return int(result["TotalSuccess"]) if result is not None else 0

    def claim(self, machine_ad: classad2.ClassAd) -> classad2.ClassAd | None:
        """Not available: in an HTCondor pool condor_startd and the negotiator match jobs."""
        raise PoolError(
            "claim is done by condor_startd in an HTCondor pool; use the embedded backend."
        )

    def complete(self, job_id: str, exit_code: int, output_tail: str = "") -> classad2.ClassAd:
        """Not available: in an HTCondor pool the starter reports job completion."""
        raise PoolError(
            "complete is done by condor_starter in an HTCondor pool; use the embedded backend."
        )
