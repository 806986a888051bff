"""The frontend configuration: collectors and schedds to talk to, global limits, groups
(which jobs, matched to which entries) and credentials (DESIGN.md §1, §4).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from gwms.config.common import (
    Bool,
    ClassAdExpr,
    CollectorRef,
    ConfigModel,
    ConfigPath,
    Duration,
    HostPort,
    HttpUrl,
    LogLevel,
    Name,
    NonNegativeInt,
    PositiveInt,
    Text,
    shown,
)
from gwms.config.factory import AuthMethod
from gwms.config.issues import Problem
from gwms.config.refs import check_patterns, duplicates, raise_problems


class EmbeddedSchedd(ConfigModel):
    """The job queue of an embedded collector (`gwms collector serve`)."""

    backend: Literal["embedded"]
    url: HttpUrl = Field(description="base URL of the embedded collector serving the queue")
    token_file: ConfigPath = Field(description="file holding the bearer token (0600)")
    name: Name = Field("local", description="name used in logs and monitoring")


class HTCondorSchedd(ConfigModel):
    """An HTCondor schedd, located through its pool collector."""

    backend: Literal["htcondor"]
    address: HostPort = Field(description='"host:port" of the pool collector that knows it')
    name: Text = Field(description="the schedd's Name, e.g. schedd@submit.example.org")


ScheddRef = Annotated[EmbeddedSchedd | HTCondorSchedd, Field(discriminator="backend")]


class GlobalLimits(ConfigModel):
    """Totals over all groups; between curb and max the frontend asks for fewer, at max none."""

    max_running: NonNegativeInt = Field(10000, description="glideins in total")
    curb_running: NonNegativeInt | None = Field(None, description="default 90% of max_running")
    max_idle: NonNegativeInt = Field(1000, description="idle glideins in total")
    curb_idle: NonNegativeInt | None = Field(None, description="default 20% of max_idle")


class PerEntryLimits(ConfigModel):
    """What one group asks of one entry at most."""

    max_running: NonNegativeInt = Field(1000, description="glideins on one entry")
    max_idle: NonNegativeInt = Field(100, description="idle glideins requested of one entry")


class GroupLimits(ConfigModel):
    """What one group asks for at most, in total and per entry."""

    max_running: NonNegativeInt = Field(5000, description="glideins for this group")
    max_idle: NonNegativeInt = Field(500, description="idle glideins for this group")
    per_entry: PerEntryLimits = Field(default_factory=PerEntryLimits)


class RampUp(ConfigModel):
    """How fast requests grow, so a burst of jobs does not flood one entry at once."""

    max_new_per_cycle: PositiveInt = Field(
        50, description="rise of the idle request per entry per cycle, at most"
    )
    attenuation: float = Field(
        1.0, ge=1.0, description="the request is the idle jobs matched divided by this (>= 1)"
    )


_ENTRY_GLOB = re.compile(r"[^/\s]+/[^/\s]+")


def _entry_glob(value: Any) -> str:
    if not isinstance(value, str) or not _ENTRY_GLOB.fullmatch(value):
        raise PydanticCustomError(
            "gwms_value",
            'must be "<factory>/<entry>", globs allowed (e.g. "gfactory-*/ec2_*"), got {got}',
            {"got": shown(value)},
        )
    return value


EntryGlob = Annotated[str, BeforeValidator(_entry_glob)]


class Group(ConfigModel):
    """A set of jobs with one matching policy: which jobs, which entries, how many glideins."""

    name: Name = Field(description="group name, unique in this frontend")
    enabled: Bool = True
    job_constraint: ClassAdExpr = Field("true", description="which queued jobs the group serves")
    match: ClassAdExpr = Field(
        "true", description="evaluated with the job as MY and the entry ad as TARGET"
    )
    entries: list[EntryGlob] = Field(
        default_factory=lambda: ["*/*"], min_length=1, description="<factory>/<entry> globs"
    )
    limits: GroupLimits = Field(default_factory=GroupLimits)
    ramp_up: RampUp = Field(default_factory=RampUp)


class Credential(ConfigModel):
    """A secret this frontend delegates, sealed to the factory's key in each request."""

    id: Name = Field(description="short id, sent (sealed) in requests")
    type: AuthMethod = Field(description="x509_proxy, idtoken, aws_key_pair, aws_role, ...")
    path: ConfigPath = Field(description="the secret file (0600)")
    trust_domain: Name = Field("grid", description="only entries of this domain receive it")
    min_lifetime: Duration = Field(7200, description="not sent with less time left than this")
    groups: list[Text] = Field(
        default_factory=lambda: ["*"], min_length=1, description="group names or globs"
    )


class TrustedFactory(ConfigModel):
    """A factory whose entry ads this frontend uses, pinned to the identity that publishes them."""

    name: Name = Field(description="the factory's name, as in its entry ads")
    identity: Text = Field(description="the AuthenticatedIdentity its collector stamps on them")


class FrontendConfig(ConfigModel):
    """A frontend configuration file (flat: these keys at the top level)."""

    name: Name = Field(description="frontend name; the factory knows it by this name")
    identity: Text | None = Field(
        None, description="our AuthenticatedIdentity; default: read back from the collector"
    )
    factories: list[TrustedFactory] = Field(
        default_factory=list,
        description="factories to trust, each pinned to its identity; empty: any (with a warning)",
    )
    collectors: list[CollectorRef] = Field(
        min_length=1, description="factory-side collectors: entry ads in, requests out"
    )
    schedds: list[ScheddRef] = Field(min_length=1, description="where the jobs are queued")
    cycle: Duration = Field(60, description="seconds between frontend cycles")
    log_level: LogLevel = "INFO"
    limits: GlobalLimits = Field(default_factory=GlobalLimits)
    groups: list[Group] = Field(min_length=1, description="job groups, each with its policy")
    credentials: list[Credential] = Field(min_length=1, description="secrets to delegate")

    @model_validator(mode="after")
    def _defaults_and_references(self, info: ValidationInfo) -> FrontendConfig:
        limits = self.limits
        if limits.curb_running is None:
            limits.curb_running = limits.max_running * 9 // 10
        if limits.curb_idle is None:
            limits.curb_idle = limits.max_idle // 5
        if not (info.context or {}).get("defer_problems"):
            raise_problems(self.problems())
        return self

    def credentials_for(self, group: str) -> list[Credential]:
        """The credentials a group may use."""
        return [c for c in self.credentials if _matches_any(group, c.groups)]

    def problems(self) -> list[Problem]:
        """Cross-field problems: unique names, curbs within maxima, every group has a credential."""
        found: list[Problem] = []
        found += duplicates("group", ("groups",), [g.name for g in self.groups])
        found += duplicates("credential", ("credentials",), [c.id for c in self.credentials], "id")
        found += duplicates("schedd", ("schedds",), [s.name for s in self.schedds])
        for kind in ("running", "idle"):
            curb = getattr(self.limits, f"curb_{kind}")
            maximum = getattr(self.limits, f"max_{kind}")
            if curb is not None and curb > maximum:
                found.append(
                    Problem(
                        ("limits", f"curb_{kind}"),
                        f"must not exceed limits.max_{kind} ({maximum}), got {curb}",
                    )
                )
        group_names = [group.name for group in self.groups]
        for index, credential in enumerate(self.credentials):
            loc = ("credentials", index, "groups")
            found += check_patterns(loc, credential.groups, group_names, "group")
        for index, group in enumerate(self.groups):
            if not self.credentials_for(group.name):
                found.append(
                    Problem(
                        ("groups", index, "name"),
                        f"no credential may be used by group {group.name}, so it cannot request"
                        " glideins; add it to the groups of a credential",
                    )
                )
        return found


def _matches_any(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
