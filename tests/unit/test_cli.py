"""The `llm-gateway` command's paths that start nothing: bad configuration, stopping what is not running."""

from launcher.cli import main


def test_bad_config_exits_2_naming_file_and_field(tmp_path, capsys):
    bad = tmp_path / "gw.yaml"
    bad.write_text("providers: {openai: {kind: openai}}\nmodels: {m: {provider: nope, upstream: x}}\n")
    assert main(["up", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "models.m.provider" in err


def test_down_and_status_when_nothing_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_GATEWAY_STATE_DIR", str(tmp_path))
    assert main(["down"]) == 0
    assert "no gateway is running" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "not running" in capsys.readouterr().out
