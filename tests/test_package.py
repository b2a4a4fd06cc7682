"""Packaging: one `nanolens` namespace, no bare top-level packages, a fast CLI."""

import subprocess
import sys


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_nanolens_imports_and_bare_models_does_not(tmp_path):
    assert run_python("import nanolens, nanolens.models; from nanolens.models import GPT", tmp_path).returncode == 0
    for bare in ("models", "probes", "steering", "apps"):
        result = run_python(f"import {bare}", tmp_path)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, bare


def test_help_does_not_import_torch_or_transformer_lens(tmp_path):
    code = (
        "import sys\n"
        "from nanolens.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformer_lens') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_console_script_help():
    result = subprocess.run(["nanolens", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "sample" in result.stdout and "presets" in result.stdout


def test_presets_command_lists_the_ladder():
    from nanolens.cli import main
    from nanolens.models.presets import LADDER

    assert main(["presets"]) == 0
    assert [p.name for p in LADDER][:2] == ["bigram", "average"] and LADDER[-1].name == "modern"
