"""`make demo` (aifactory-local demo): one job end to end, driven by the client library."""

from pathlib import Path
from typing import Any

import pytest

from aifactory_client import Client
from aifactory_local import demo
from aifactory_local.factory import LocalFactory


def test_the_demo_drives_the_job_with_the_client_library_and_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the client library, recording which of its methods the demo calls
    called: list[str] = []

    class Recording(Client):
        def __getattribute__(self, name: str) -> Any:
            if name in ("create", "wait", "status", "model_url"):
                called.append(name)
            return super().__getattribute__(name)

    monkeypatch.setattr(demo, "Client", Recording)
    # When the demo runs
    code = demo.run_demo(LocalFactory(api_keys={"demo": "demo-key-0123456789"}, state_dir=tmp_path))
    out = capsys.readouterr().out
    # Then it created and followed the job through the client, and passed
    assert code == 0, out
    assert called[:2] == ["create", "wait"] and "model_url" in called
    assert "demo passed" in out
    assert "avg (weighted)" in out
