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


def test_every_top_level_package_is_installed_by_pyproject():
    """The console script and Ray workers import from the installed project, not the working directory."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.parent.name for p in root.glob("*/__init__.py") if p.parent.name not in {"tests", "bench"}]
    assert packages and all(any(fnmatch.fnmatch(p, pattern) for pattern in include) for p in packages), packages
