"""The checked-in stubs match what the .proto generates."""

from perfbox.api import generate


def test_checked_in_stubs_match_the_proto() -> None:
    stale = generate.drift()
    assert stale == [], f"run `python -m perfbox.api.generate`; stale: {stale}"


def test_drift_is_detected(tmp_path, monkeypatch) -> None:
    fresh = generate.generate()
    (tmp_path / "tools_pb2.py").write_text(fresh["tools_pb2.py"] + "\n# edited by hand\n")
    for name, content in fresh.items():
        if name != "tools_pb2.py":
            (tmp_path / name).write_text(content)
    monkeypatch.setattr(generate, "OUT_DIR", tmp_path)
    assert generate.drift() == ["tools_pb2.py"]
