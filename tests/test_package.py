"""Packaging: one `nanolens` namespace, no bare top-level packages, a fast CLI."""

import subprocess
import sys


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_nanolens_imports_and_bare_models_does_not(tmp_path):
    assert run_python("import nanolens, nanolens.models; from nanolens.models import GPT", tmp_path).returncode == 0
    for bare in ("models", "corpora", "training", "probes", "steering", "finetune", "apps", "commands"):
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


def test_every_subcommand_module_exists_and_runs_its_arguments():
    """The parser names a module per subcommand; each one exists and has `run(args)`."""
    import importlib

    from nanolens.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        module = sub.get_default("command_module")
        if module is None:  # finetune: its stages set it
            module = next(iter(sub._subparsers._group_actions[0].choices.values())).get_default("command_module")
        assert callable(importlib.import_module(f"nanolens.commands.{module}").run), name


def test_console_script_help():
    result = subprocess.run(["nanolens", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "sample" in result.stdout and "presets" in result.stdout


def test_presets_command_lists_the_ladder():
    from nanolens.cli import main
    from nanolens.models.presets import LADDER

    assert main(["presets"]) == 0
    assert [p.name for p in LADDER][:2] == ["bigram", "average"] and LADDER[-1].name == "modern"


def test_the_lazy_names_of_nanolens_models_agree_with_their_type_checking_imports():
    """`nanolens.models` loads its names on first use; the `TYPE_CHECKING` imports that IDEs read
    must name the same modules, and every name must resolve."""
    import ast
    import importlib

    import nanolens.models as models

    tree = ast.parse(open(models.__file__, encoding="utf-8").read())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {alias.name: node.module for node in block.body for alias in node.names}
    assert typed == models._HOMES and sorted(models.__all__) == sorted(models._HOMES)
    for name, module in typed.items():
        assert getattr(models, name) is getattr(importlib.import_module(f"nanolens.models.{module}"), name)


def test_importing_nanolens_models_or_listing_presets_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from nanolens.cli import main\n"
        "import nanolens.models\n"
        "assert main(['presets']) == 0\n"
        "heavy = [m for m in ('torch', 'transformer_lens') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
