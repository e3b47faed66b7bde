"""A function whose configuration is incomplete fails at cold start, naming what is missing."""

import pytest

from aifactory import runtime
from aifactory.settings import Settings
from tests.support import load_function
from tests.unit.fakes import ENV


@pytest.mark.parametrize("function", ["create_training_job", "stage_dataset", "notify"])
def test_missing_setting_fails_the_import_with_its_name(monkeypatch, function):
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    for name, value in ENV.items():
        if name != "DATA_BUCKET":
            monkeypatch.setenv(name, value)
    runtime.reset()
    try:
        with pytest.raises(RuntimeError, match="DATA_BUCKET: Field required"):
            load_function(function)
    finally:
        runtime.reset()
