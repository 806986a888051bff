"""What the factory tells each pilot, from its entry."""

from pathlib import Path

from gwms.config import load_factory_config
from gwms.factory.userdata_builder import pilot_args

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "factory.yaml"


def test_pilot_args_carry_idle_shutdown_and_attributes_before_the_operators_own() -> None:
    entry = next(e for e in load_factory_config(EXAMPLE).entries if e.name == "local_vm")
    # local_vm: idle_shutdown 10m, GLIDEIN_Site Local, GLIDEIN_ResourceName LocalHost, -debug
    assert pilot_args(entry) == [
        "-idle", "600",
        "-param_GLIDEIN_Site", "Local",
        "-param_GLIDEIN_ResourceName", "LocalHost",
        "-debug",
    ]  # fmt: skip
