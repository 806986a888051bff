"""docs/configuration.md documents every key the models accept, and the examples use no key
the reference does not describe."""

import inspect
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from gwms.config import FactoryConfig, FrontendConfig
from gwms.config.messages import _strip

REPO = Path(__file__).resolve().parents[2]
REFERENCE = (REPO / "docs" / "configuration.md").read_text()


def models_under(tp: Any, seen: list[type[BaseModel]]) -> list[type[BaseModel]]:
    tp = _strip(tp)
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        if tp not in seen:
            seen.append(tp)
            for info in tp.model_fields.values():
                models_under(info.annotation, seen)
    else:
        for arg in get_args(tp):
            models_under(arg, seen)
    return seen


def test_every_configuration_key_is_in_the_reference() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", REFERENCE))
    missing = {
        f"{model.__name__}.{name}"
        for model in models_under(FactoryConfig, []) + models_under(FrontendConfig, [])
        for name in model.model_fields
        if name not in documented
    }
    assert missing == set()
