"""The command line: engine choice when PyTC is missing, and flag errors."""
import pytest

from connectomics_mednext import cli, pytc


def test_missing_pytc_is_reported_plainly(monkeypatch, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("MODEL:\n  ARCHITECTURE: mednext\n")

    def no_pytc(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(pytc.importlib, "import_module", no_pytc)
    assert not pytc.is_pytc_available()
    with pytest.raises(SystemExit, match="--engine pytc: PyTorch Connectomics v1.0 is not importable"):
        cli.main(["--engine", "pytc", "--config-file", str(config)])


def test_missing_config_file_names_the_flag(tmp_path):
    with pytest.raises(SystemExit, match="--config-file: file .*nope.yaml.* does not exist"):
        cli.main(["--config-file", str(tmp_path / "nope.yaml")])
