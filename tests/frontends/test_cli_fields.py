"""The CLI on entries with aligned fields: compile --align, info, ls, show --field, verify."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import lardon_store as ls
from lardon_store import cli

FEATURES = """
import numpy as np

def extract(path):
    y = np.load(path)
    t = len(y) // 256
    return {"audio": y, "mel": np.ones((8, t + 1), np.float32), "f0": np.arange(t, dtype=np.float32)}, {"n": len(y)}
"""


@pytest.fixture
def compiled(tmp_path, monkeypatch, capsys):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "cli_features.py").write_text(textwrap.dedent(FEATURES))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    (tmp_path / "wavs").mkdir()
    for i in range(3):
        np.save(tmp_path / "wavs" / f"w{i}.npy", np.zeros(256 * (10 + i) + 5, np.float32))
    argv = ["compile", str(tmp_path / "wavs"), str(tmp_path / "store"), "--callback", "cli_features:extract",
            "--align", "audio=0:256", "--align", "mel=-1:1", "--align", "f0=0:1", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    return tmp_path


def test_compile_align_info_ls_show(compiled, capsys, monkeypatch):
    store = ls.open(compiled / "store")
    assert store.fields == ("audio", "f0", "mel") and store.steps.tolist() == [10, 11, 12]
    assert store.alignment == {"audio": (0, 256), "f0": (0, 1), "mel": (-1, 1)}
    assert cli.main(["info", str(compiled / "store")]) == 0
    out = capsys.readouterr().out
    assert "field      mel: (8, 11..13), time axis -1, 1 per step" in out and "audio: <f4: 3" in out
    assert cli.main(["info", str(compiled / "store"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["alignment"]["audio"] == [0, 256] and info["fields"]["f0"]["1"] == [[10], [12]]
    assert cli.main(["ls", str(compiled / "store"), "--where", "n > 2600"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["w1", "audio:2821", "f0:11", "mel:8x12"] and lines[-1] == "(2 entries)"
    assert cli.main(["ls", str(compiled / "store"), "--format", "json", "--limit", "1"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["fields"]["mel"] == {"shape": [8, 11], "dtype": "<f4"}
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(compiled)
    assert cli.main(["show", str(compiled / "store"), "w0"]) == 1
    assert "pass --field NAME" in capsys.readouterr().err
    assert cli.main(["show", str(compiled / "store"), "w0", "--field", "mel"]) == 0
    assert (compiled / "w0.png").stat().st_size > 1000
    assert cli.main(["verify", str(compiled / "store")]) == 0
    assert "3 entries (9 arrays)" in capsys.readouterr().out


def test_a_changed_alignment_and_a_bad_spec_are_one_line_errors(compiled, capsys):
    argv = ["compile", str(compiled / "wavs"), str(compiled / "store"), "--callback", "cli_features:extract",
            "--align", "audio=0:128", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 1  # (a library error: exit 1, one line)
    err = capsys.readouterr().err
    assert "this store was compiled with align=" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        cli.main(argv[:-2] + ["audio:0:128", "--quiet"])
    assert "is not FIELD=AXIS:RATE" in capsys.readouterr().err
