"""The command line: which engine runs and why, PyTC present but broken, flag errors."""

import importlib.machinery

import pytest

from connectomics_mednext import cli, pytc

CONFIG = "MODEL:\n  ARCHITECTURE: mednext\nSOLVER:\n  ITERATION_SAVE: 0\n"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return str(path)


def _pytc_absent(monkeypatch):
    monkeypatch.setattr(pytc.importlib.util, "find_spec", lambda name: None)


def _pytc_broken(monkeypatch, missing: str):
    spec = importlib.machinery.ModuleSpec("connectomics", None, origin="/opt/pytc/connectomics/__init__.py")
    monkeypatch.setattr(pytc.importlib.util, "find_spec", lambda name: spec)

    def import_module(name):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(pytc.importlib, "import_module", import_module)


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_auto_without_pytc_says_our_engine_runs_and_why(monkeypatch, config, capsys):
    _pytc_absent(monkeypatch)
    code, out, err = _run(["--config-file", config], capsys)
    assert out.splitlines()[0] == (
        "engine: ours, because PyTorch Connectomics v1.0 is not importable (no module "
        "named 'connectomics'); install it from source (github.com/PytorchConnectomics/"
        "pytorch_connectomics, branch v1.0); the PyPI package named 'connectomics' is a "
        "different library."
    )
    # Our engine then ran and refused the config with its own message.
    assert code == 2 and "SOLVER.ITERATION_SAVE is 0" in err


def test_pytc_with_a_missing_dependency_names_it(monkeypatch, config, capsys):
    _pytc_broken(monkeypatch, "skimage")
    code, out, err = _run(["--config-file", config], capsys)
    assert out.splitlines()[0] == (
        "engine: ours, because PyTorch Connectomics at /opt/pytc/connectomics is installed "
        "but cannot be imported: it needs the module 'skimage', which is missing; pip install "
        "scikit-image."
    )
    code, out, err = _run(["--engine", "pytc", "--config-file", config], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (
        "error: --engine pytc: PyTorch Connectomics at /opt/pytc/connectomics is installed but cannot "
        "be imported: it needs the module 'skimage', which is missing; pip install scikit-image."
    )


def test_missing_torchvision_points_at_the_stand_ins(monkeypatch):
    _pytc_broken(monkeypatch, "torchvision")
    with pytest.raises(
        pytc.PyTCNotAvailable,
        match="module 'torchvision', which is missing; on a CPU-only machine "
        r"put our stand-ins first on PYTHONPATH \(PYTHONPATH=tools/pytc_standins\)",
    ):
        pytc.import_pytc()


def test_another_connectomics_package_is_not_mistaken_for_pytc(monkeypatch):
    _pytc_broken(monkeypatch, "connectomics.config")
    with pytest.raises(
        pytc.PyTCNotAvailable,
        match="the 'connectomics' package at /opt/pytc/connectomics is not PyTorch Connectomics v1.0",
    ):
        pytc.import_pytc()


def test_native_engine_says_it_was_asked_for(config, capsys):
    code, out, _ = _run(["--engine", "native", "--config-file", config], capsys)
    assert out.splitlines()[0] == "engine: ours (--engine native)" and code == 2


def test_missing_config_file_names_the_flag(tmp_path, capsys):
    code, _, err = _run(["--config-file", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and err.startswith("error: --config-file: file ") and "nope.yaml' does not exist." in err


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for action in cli.build_parser()._actions:
        assert action.help, action.dest
    assert "resume training" in " ".join(text.split())
