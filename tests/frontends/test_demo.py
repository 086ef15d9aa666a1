"""The README's first command: `lardon-store demo DIR` builds, compiles, summarises and queries a dataset."""

from lardon_store import cli


def test_demo_builds_compiles_and_reports(tmp_path, capsys):
    assert cli.main(["demo", str(tmp_path / "demo"), "--files", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 new" in out and "entries    8" in out and "instrument, pitch, split" in out
    assert "random crop" in out and "ratio" in out
    assert cli.main(["demo", str(tmp_path / "demo"), "--files", "8"]) == 0  # again: incremental, nothing to do
    assert "0 new, 0 changed, 8 unchanged" in capsys.readouterr().out
