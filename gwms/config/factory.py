"""The factory configuration: identity, collector, web service, keys, authorised frontends,
clouds and entries (DESIGN.md §1, §3-§6). Every field is documented in docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from gwms.config.common import (
    Arg,
    AttrName,
    AttrValue,
    Bool,
    ByteSize,
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
    PositiveFloat,
    PositiveInt,
    Retries,
    Text,
    TokenBucket,
    shown,
)
from gwms.config.issues import Problem
from gwms.config.refs import check_patterns, dangling, duplicates, raise_problems

AuthMethod = Literal[
    "x509_proxy", "aws_key_pair", "aws_role", "openstack_app_credential", "idtoken"
]
AUTH_METHODS: tuple[str, ...] = get_args(AuthMethod)

# --- factory services ------------------------------------------------------------------------


class WebService(ConfigModel):
    """The factory's HTTP service: pilot files for VMs, and log uploads from them."""

    listen: HostPort = Field("127.0.0.1:8319", description="address the web service binds")
    base_url: HttpUrl | None = Field(
        None, description="URL VMs use to reach the service; default http://<listen>"
    )
    web_dir: ConfigPath | None = Field(None, description="pilot files; default <state_dir>/web")
    upload_dir: ConfigPath | None = Field(
        None, description="uploaded glidein logs; default <state_dir>/uploads"
    )
    max_upload_size: ByteSize = Field(50_000_000, description="largest log upload accepted")


class Keys(ConfigModel):
    """The factory's key pair, published in entry ads so frontends can seal credentials."""

    dir: ConfigPath | None = Field(None, description="key directory; default <state_dir>/keys")
    rotation_grace: Duration = Field(
        86400, description="how long the previous key still opens requests after a rotation"
    )


class AuthorisedFrontend(ConfigModel):
    """A frontend this factory serves, known by the identity the collector authenticated."""

    name: Name = Field(description="the frontend's name, as in its own configuration")
    identity: Text = Field(
        description="AuthenticatedIdentity the collector stamps on its ads (e.g. vofe@example.org)"
    )
    max_glideins: NonNegativeInt = Field(
        10000, description="glideins this frontend may have across all entries"
    )
    entries: list[Text] = Field(
        default_factory=lambda: ["*"], description="entry names or globs it may use"
    )


# --- clouds ----------------------------------------------------------------------------------


class FromFrontend(ConfigModel):
    """Cloud credentials come sealed in each frontend request (the frontend pays)."""

    type: Literal["from_frontend"]


class Ec2KeyPair(ConfigModel):
    """An access key id and secret in a file (AWS shared-credentials format), 0600."""

    type: Literal["key_pair"]
    file: ConfigPath = Field(description="file with aws_access_key_id and aws_secret_access_key")


class Ec2Role(ConfigModel):
    """A role the factory assumes (STS), from the default chain or a key pair file."""

    type: Literal["role"]
    role_arn: Text = Field(description="arn:aws:iam::<account>:role/<name>")
    source_file: ConfigPath | None = Field(
        None, description="key pair used to assume the role; default the boto3 default chain"
    )


class Ec2DefaultChain(ConfigModel):
    """boto3's default chain: environment, shared files, instance profile."""

    type: Literal["default"]


Ec2Credentials = Annotated[
    Ec2KeyPair | Ec2Role | Ec2DefaultChain | FromFrontend, Field(discriminator="type")
]


class Ec2RateLimits(ConfigModel):
    """EC2 request throttling, per region (DESIGN.md §6); defaults are AWS's published buckets."""

    run_instances: TokenBucket = Field(
        default_factory=lambda: TokenBucket(capacity=5, refill_per_second=2),
        description="RunInstances requests",
    )
    run_instances_instances: TokenBucket = Field(
        default_factory=lambda: TokenBucket(capacity=1000, refill_per_second=2),
        description="instances launched by RunInstances",
    )
    terminate_instances: TokenBucket = Field(
        default_factory=lambda: TokenBucket(capacity=1000, refill_per_second=20),
        description="instances terminated by TerminateInstances",
    )
    describe: TokenBucket = Field(
        default_factory=lambda: TokenBucket(capacity=100, refill_per_second=20),
        description="Describe* requests",
    )
    mutating: TokenBucket = Field(
        default_factory=lambda: TokenBucket(capacity=50, refill_per_second=5),
        description="other mutating requests (CreateTags, TerminateInstances calls)",
    )


class ApiRateLimits(ConfigModel):
    """One token bucket for every API call to the endpoint."""

    api: TokenBucket = Field(description="all API requests to this endpoint")


class Ec2Cloud(ConfigModel):
    """An EC2 region, or an EC2-compatible endpoint (OpenNebula, Eucalyptus)."""

    name: Name = Field(description="cloud name, unique in this factory")
    type: Literal["ec2"]
    region: Text = Field(description="region name, e.g. us-east-1")
    endpoint_url: HttpUrl | None = Field(None, description="EC2-compatible endpoint; default AWS")
    all_or_nothing: Bool = Field(
        False,
        description="launch a batch whole or not at all (MinCount=MaxCount), e.g. for moto,"
        " which launches exactly MinCount instances",
    )
    credentials: Ec2Credentials = Field(default_factory=lambda: Ec2DefaultChain(type="default"))
    rate_limits: Ec2RateLimits = Field(default_factory=Ec2RateLimits)
    retries: Retries = Field(default_factory=Retries)


class OpenStackCloudsYaml(ConfigModel):
    """A cloud from clouds.yaml (openstacksdk's own search path unless `file` is given)."""

    type: Literal["clouds_yaml"]
    cloud: Text = Field(description="cloud name in clouds.yaml")
    file: ConfigPath | None = Field(None, description="clouds.yaml path; default sdk search")


class OpenStackAppCredential(ConfigModel):
    """A Keystone application credential (id and secret in a 0600 file)."""

    type: Literal["app_credential"]
    auth_url: HttpUrl = Field(description="Keystone v3 URL")
    file: ConfigPath = Field(description="file with the credential id and secret")


class OpenStackFromFrontend(ConfigModel):
    """Application credentials come sealed in each frontend request."""

    type: Literal["from_frontend"]
    auth_url: HttpUrl = Field(description="Keystone v3 URL the frontend credentials are for")


OpenStackCredentials = Annotated[
    OpenStackCloudsYaml | OpenStackAppCredential | OpenStackFromFrontend,
    Field(discriminator="type"),
]


def _openstack_limits() -> ApiRateLimits:
    return ApiRateLimits(api=TokenBucket(capacity=500, refill_per_second=500 / 300))


class OpenStackCloud(ConfigModel):
    """An OpenStack region (Nova, Neutron, Glance via openstacksdk)."""

    name: Name = Field(description="cloud name, unique in this factory")
    type: Literal["openstack"]
    region: Text | None = Field(None, description="region name; default the cloud's only one")
    credentials: OpenStackCredentials = Field(
        description="type clouds_yaml, app_credential or from_frontend"
    )
    rate_limits: ApiRateLimits = Field(default_factory=_openstack_limits)
    retries: Retries = Field(default_factory=Retries)


def _local_limits() -> ApiRateLimits:
    return ApiRateLimits(api=TokenBucket(capacity=100, refill_per_second=10))


class LocalCloud(ConfigModel):
    """Local instances: a sandboxed process tree per VM on this host, for trials and tests."""

    name: Name = Field(description="cloud name, unique in this factory")
    type: Literal["local"]
    base_dir: ConfigPath | None = Field(
        None, description="one directory per instance; default <state_dir>/local-instances"
    )
    max_instances: PositiveInt = Field(20, description="instances this host runs at most")
    pilot_user: Text | None = Field(
        None, description="user the pilot runs as when the factory is root (default glidein)"
    )
    python: ConfigPath | None = Field(
        None, description="interpreter for the VM bootstrap; the pilot user must be able to run it"
    )
    rate_limits: ApiRateLimits = Field(default_factory=_local_limits)
    retries: Retries = Field(default_factory=Retries)


Cloud = Annotated[Ec2Cloud | OpenStackCloud | LocalCloud, Field(discriminator="type")]

# --- entries ---------------------------------------------------------------------------------


class LatestImage(ConfigModel):
    """The newest image the image pipeline recorded for a provider."""

    latest: Name = Field(description="provider (build) name in the manifest, e.g. openstack")
    manifest: ConfigPath | None = Field(
        None, description="Packer manifest; default <state_dir>/images/manifest.json"
    )


def _image_tag(value: Any) -> str:
    return "latest" if isinstance(value, dict | LatestImage) else "id"


def _image_shape(value: Any) -> Any:
    if not isinstance(value, str | dict | LatestImage):
        raise PydanticCustomError(
            "gwms_value",
            "must be an image id or {shape}, got {got}",
            {"shape": "{latest: <provider>}", "got": shown(value)},
        )
    return value


ImageRef = Annotated[
    Annotated[Text, Tag("id")] | Annotated[LatestImage, Tag("latest")],
    Discriminator(_image_tag),
    BeforeValidator(_image_shape),
]


class EntryLimits(ConfigModel):
    """What the factory allows on an entry, whatever frontends ask for."""

    max_running: NonNegativeInt = Field(100, description="glideins (VMs) alive on this entry")
    max_idle: NonNegativeInt = Field(10, description="glideins launched but not yet running")
    max_per_frontend: NonNegativeInt | None = Field(
        None, description="glideins one frontend may hold here; default max_running"
    )
    max_launches_per_cycle: PositiveInt = Field(20, description="VMs launched per factory cycle")


class Lifetimes(ConfigModel):
    """How long a glidein lives; the lease reaper terminates VMs past `max`."""

    max: Duration = Field(86400, description="hard limit; the VM is terminated after this")
    retire: Duration = Field(72000, description="the pilot accepts no new jobs after this")
    idle_shutdown: Duration = Field(1200, description="the pilot exits after idling this long")


class Spot(ConfigModel):
    """Launch as spot instances (EC2 only)."""

    max_price: PositiveFloat | None = Field(
        None, description="highest price per hour in USD; default the on-demand price"
    )


class Entry(ConfigModel):
    """One way to run glideins: a cloud, an image, instance types and the policy around them."""

    name: Name = Field(description="entry name, unique in this factory")
    enabled: Bool = Field(True, description="false stops launches; running VMs are kept")
    cloud: Name = Field(description="name of a cloud in `clouds`")
    image: ImageRef = Field(description="an image id, or {latest: <provider>}")
    instance_types: list[Text] = Field(
        min_length=1, description="instance types (OpenStack: flavors), e.g. [m5.large]"
    )
    trust_domain: Name = Field("grid", description="credentials must be for this domain")
    auth_methods: list[AuthMethod] = Field(
        default_factory=lambda: ["idtoken", "x509_proxy"],
        min_length=1,
        description="credential types accepted in requests",
    )
    limits: EntryLimits = Field(default_factory=EntryLimits)
    lifetimes: Lifetimes = Field(default_factory=Lifetimes)
    proxy_margin: Duration = Field(3600, description="per-glidein proxy outlives max by this")
    allow_privileged_overlays: Bool = False
    pilot_args: list[Arg] = Field(default_factory=list)
    attributes: dict[AttrName, AttrValue] = Field(
        default_factory=dict, description="extra ClassAd attributes (e.g. GLIDEIN_Site)"
    )
    start: ClassAdExpr = Field("true", description="START expression of the glidein's startd")
    spot: Spot | None = None
    key_name: Text | None = Field(None, description="SSH key pair name on the cloud")
    security_groups: list[Text] = Field(default_factory=list)
    network: Text | None = Field(None, description="OpenStack network, or EC2 subnet id")
    availability_zone: Text | None = None


# --- the whole file --------------------------------------------------------------------------

_CLOUD_AUTH = {"ec2": ("aws_key_pair", "aws_role"), "openstack": ("openstack_app_credential",)}


class FactoryConfig(ConfigModel):
    """A factory configuration file (flat: these keys at the top level)."""

    name: Name = Field(description="factory name, published in every entry ad")
    collector: CollectorRef = Field(description="backend embedded (url, token_file) or htcondor")
    state_dir: ConfigPath = Field(
        Path("/var/lib/gwms/factory"), description="journal and default home of other dirs"
    )
    web: WebService = Field(default_factory=WebService)
    keys: Keys = Field(default_factory=Keys)
    cycle: Duration = Field(60, description="seconds between factory cycles")
    log_level: LogLevel = "INFO"
    frontends: list[AuthorisedFrontend] = Field(default_factory=list)
    clouds: list[Cloud] = Field(min_length=1, description="named cloud endpoints")
    entries: list[Entry] = Field(min_length=1, description="the entries this factory offers")

    @model_validator(mode="after")
    def _defaults_and_references(self, info: ValidationInfo) -> FactoryConfig:
        self._fill_derived_defaults()
        if not (info.context or {}).get("defer_problems"):
            raise_problems(self.problems())
        return self

    def _fill_derived_defaults(self) -> None:
        state = self.state_dir
        if self.web.web_dir is None:
            self.web.web_dir = state / "web"
        if self.web.upload_dir is None:
            self.web.upload_dir = state / "uploads"
        if self.web.base_url is None and not _wildcard(self.web.listen):
            self.web.base_url = f"http://{self.web.listen}"
        if self.keys.dir is None:
            self.keys.dir = state / "keys"
        for cloud in self.clouds:
            if isinstance(cloud, LocalCloud) and cloud.base_dir is None:
                cloud.base_dir = state / "local-instances"
        for entry in self.entries:
            if isinstance(entry.image, LatestImage) and entry.image.manifest is None:
                entry.image.manifest = state / "images" / "manifest.json"

    def cloud(self, name: str) -> Ec2Cloud | OpenStackCloud | LocalCloud:
        """The cloud called `name` (names are unique once validated)."""
        return next(cloud for cloud in self.clouds if cloud.name == name)

    def problems(self) -> list[Problem]:
        """Cross-field problems: unique names, references that resolve, consistent limits."""
        found: list[Problem] = []
        found += duplicates("cloud", ("clouds",), [c.name for c in self.clouds])
        found += duplicates("entry", ("entries",), [e.name for e in self.entries])
        found += duplicates("frontend", ("frontends",), [f.name for f in self.frontends])
        found += duplicates(
            "frontend", ("frontends",), [f.identity for f in self.frontends], "identity"
        )
        if self.web.base_url is None:
            found.append(
                Problem(
                    ("web", "listen"),
                    f"listens on all interfaces ({self.web.listen}), so VMs need web.base_url;"
                    " set it to the URL VMs reach this host by",
                )
            )
        clouds = {cloud.name: cloud for cloud in self.clouds}
        for index, entry in enumerate(self.entries):
            found += self._entry_problems(index, entry, clouds)
        entry_names = [entry.name for entry in self.entries]
        for index, frontend in enumerate(self.frontends):
            found += check_patterns(
                ("frontends", index, "entries"), frontend.entries, entry_names, "entry"
            )
        return found

    @staticmethod
    def _entry_problems(index: int, entry: Entry, clouds: dict[str, Any]) -> list[Problem]:
        loc = ("entries", index)
        cloud = clouds.get(entry.cloud)
        if cloud is None:
            return [dangling((*loc, "cloud"), "cloud", entry.cloud, list(clouds))]
        found = []
        life = entry.lifetimes
        if life.retire > life.max:
            found.append(
                Problem(
                    (*loc, "lifetimes", "retire"),
                    f"must not be longer than lifetimes.max ({life.max} s), got {life.retire} s",
                )
            )
        if life.idle_shutdown > life.max:
            found.append(
                Problem(
                    (*loc, "lifetimes", "idle_shutdown"),
                    f"must not be longer than lifetimes.max ({life.max} s),"
                    f" got {life.idle_shutdown} s",
                )
            )
        if entry.spot is not None and cloud.type != "ec2":
            found.append(
                Problem(
                    (*loc, "spot"),
                    f"spot instances need an ec2 cloud, but cloud {cloud.name} is {cloud.type};"
                    " remove spot",
                )
            )
        if cloud.type == "local":
            for key in ("key_name", "network", "availability_zone", "security_groups"):
                if getattr(entry, key):
                    found.append(
                        Problem(
                            (*loc, key),
                            f"does not apply to local cloud {cloud.name}; remove it",
                        )
                    )
        needed = _CLOUD_AUTH.get(cloud.type, ())
        credentials = getattr(cloud, "credentials", None)
        from_frontend = credentials is not None and credentials.type == "from_frontend"
        if from_frontend and not set(needed) & set(entry.auth_methods):
            found.append(
                Problem(
                    (*loc, "auth_methods"),
                    f"must include {' or '.join(needed)} because cloud {cloud.name} takes"
                    " its credentials from the frontend",
                )
            )
        return found


def _wildcard(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0]
    return host in {"0.0.0.0", "[::]", "::", ""}  # noqa: S104 - detecting it, not binding


__all__ = [
    "AUTH_METHODS",
    "AuthMethod",
    "AuthorisedFrontend",
    "Entry",
    "FactoryConfig",
    "LatestImage",
]
