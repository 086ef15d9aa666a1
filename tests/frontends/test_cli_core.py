"""The ``lardon-store`` command: every subcommand has help text, and compile/info work through ``main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lardon_store as ls
from lardon_store import cli

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "lardon-store" in out
    for name in cli.COMMANDS:
        assert name in out


def test_every_registered_command_is_in_the_parser():
    parser = cli.build_parser()
    # (argparse has no public list of its subparsers: _actions is the only way to reach them)
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert set(sub.choices) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_has_help_and_an_example(name, capsys):
    short_help, function = cli.COMMANDS[name]
    assert short_help.strip()
    assert function.__doc__ and "Example:" in function.__doc__ and "Python twin" in function.__doc__
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"lardon-store {name}" in out
    assert "Example:" in out


def test_help_through_python_m():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "lardon_store.cli", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "compile" in result.stdout and "info" in result.stdout


def test_compile_then_info(source_dir, arrays, tmp_path, capsys):
    dst = tmp_path / "cli-store"
    assert cli.main(["compile", str(source_dir), str(dst), "--ext", ".npy", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{len(arrays)} new" in out
    store = ls.open(dst)
    assert store.keys == sorted(arrays)
    for i, key in enumerate(store.keys):
        np.testing.assert_array_equal(store[i], arrays[key])

    assert cli.main(["info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert f"entries    {len(arrays)}" in out
    for descr in {a.dtype.str for a in arrays.values()}:
        assert descr in out
    assert "2-d: (0..4, 4..9)" in out  # the 2-d entries are (4, 6), (3, 9) and (0, 4)

    assert cli.main(["info", str(dst), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == len(arrays)
    assert info["bytes"] == sum(a.nbytes for a in arrays.values())

    # A second compile finds nothing to do.
    assert cli.main(["compile", str(source_dir), str(dst), "--ext", ".npy", "--quiet"]) == 0
    assert f"0 new, 0 changed, {len(arrays)} unchanged" in capsys.readouterr().out


def test_compile_with_a_callback_module(tmp_path, monkeypatch, capsys):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "my_loaders.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def load(path):
                return np.arange(4.0), {"instrument": "violin", "pitch": 60}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "one.txt").write_text("x")
    (tmp_path / "raw" / "skip.npy").write_text("x")
    dst = tmp_path / "store"
    argv = ["compile", str(tmp_path / "raw"), str(dst), "--callback", "my_loaders:load", "--ext", "txt", "--quiet"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    store = ls.open(dst)
    assert store.keys == ["one"]
    assert store.entry(0).metadata == {"instrument": "violin", "pitch": 60}
    assert cli.main(["info", str(dst)]) == 0
    assert "instrument, pitch" in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "lardon-store info: error:" in err and "nowhere" in err
    (tmp_path / "raw").mkdir()
    np.save(tmp_path / "raw" / "bad.npy", np.array(["text"]))
    assert cli.main(["compile", str(tmp_path / "raw"), str(tmp_path / "s"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "bad.npy" in err


@pytest.mark.parametrize(
    "spec, says",
    [
        ("no_colon_here", "module:function"),
        (":f", "module:function"),
        ("no_such_module_xyz:f", "cannot be imported (ModuleNotFoundError"),
        ("json:no_such_function", "has no function 'no_such_function'"),
        ("broken_module_for_cli:f", "cannot be imported (ZeroDivisionError"),
    ],
)
def test_a_bad_callback_is_one_line_exit_2(tmp_path, capsys, monkeypatch, spec, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_module_for_cli.py").write_text("1 / 0\n")
    (tmp_path / "src").mkdir()
    assert cli.main(["compile", "src", "s", "--callback", spec, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_callback_module_in_the_current_folder_is_found(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    (tmp_path / "my_loader_for_cli.py").write_text(
        "import numpy as np\ndef load(path):\n    return np.load(path), {'from': 'mine'}\n"
    )
    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "a.npy", np.arange(3))
    assert cli.main(["compile", "src", "s", "--callback", "my_loader_for_cli:load", "--quiet"]) == 0
    assert ls.open(tmp_path / "s").metadata(0) == {"from": "mine"}


def test_compiling_a_missing_folder_or_a_wav_with_the_default_callback_says_what_to_do(tmp_path, capsys):
    assert cli.main(["compile", str(tmp_path / "missing"), str(tmp_path / "s"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "missing: the source folder does not exist" in err and "Traceback" not in err
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.wav").write_bytes(b"RIFF....WAVEfmt ")
    assert cli.main(["compile", str(tmp_path / "src"), str(tmp_path / "s"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not a .npy file" in err and "--callback audio" in err and "--on-error skip" in err
    assert "on_error='skip'" not in err and "Traceback" not in err


def test_gc_of_a_folder_without_a_store_creates_nothing(tmp_path, capsys):
    assert cli.main(["gc", str(tmp_path / "nope")]) == 1
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["gc", str(tmp_path / "empty")]) == 1
    assert list((tmp_path / "empty").iterdir()) == []
    assert "no lardon_store catalog" in capsys.readouterr().err


HOSTILE = [
    [],
    ["nope"],
    ["compile"],
    ["compile", "{tmp}/missing", "{tmp}/s"],
    ["compile", "{src}", "{tmp}/s", "--workers", "-3"],
    ["compile", "{src}", "{tmp}/s", "--workers", "many"],
    ["compile", "{src}", "{tmp}/s", "--on-error", "maybe"],
    ["compile", "{src}", "{tmp}/s", "--callback", "os:getcwd"],
    ["compile", "{src}", "{tmp}/s", "--callback", "\udcff:x"],
    ["info"],
    ["info", "{tmp}/missing"],
    ["info", "{src}"],
    ["info", "{src}/a.npy"],
    ["ls", "{store}", "--where", ""],
    ["ls", "{store}", "--where", "pitch ="],
    ["ls", "{store}", "--where", "__import__('os').system('true')"],
    ["ls", "{store}", "--where", "x == " + "9" * 400],
    ["ls", "{store}", "--where", "a == '\udc80'"],
    ["ls", "{store}", "--where", "(" * 500 + "a == 1" + ")" * 500],
    ["ls", "{store}", "--limit", "-1x"],
    ["ls", "{store}", "--format", "xml"],
    ["gc", "{tmp}/missing"],
    ["gc", "{store}", "--keep-seconds", "soon"],
    ["verify", "{tmp}/missing"],
    ["migrate", "{tmp}/missing"],
    ["history", "{src}"],
    ["show", "{store}", "nope"],
    ["show", "{store}"],
    ["plot", "{store}", "nope-key"],
    ["plot", "{store}", "a", "--where", "a ="],
    ["import-lardon", "{tmp}/missing"],
    ["import-lardon", "{store}"],
    ["demo", "--files", "x"],
]


@pytest.mark.parametrize("argv", HOSTILE, ids=lambda a: " ".join(a)[:60] or "(nothing)")
def test_hostile_arguments_get_one_clear_line_and_no_traceback(argv, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.arange(3))
    store = ls.compile(src, tmp_path / "store").root
    capsys.readouterr()
    args = [a.format(tmp=tmp_path, src=src, store=store) for a in argv]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # (argparse's own exit)
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2), (code, err)
    first, *more = err.strip().splitlines()
    assert "Traceback" not in err and first.startswith("lardon-store") and "error" in first, err
    assert all(line.startswith("    ") for line in more), err  # (only a query's caret under the column at fault)
