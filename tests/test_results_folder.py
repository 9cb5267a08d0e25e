"""lossatlas.results_folder: a results folder belongs to the config files that first ran in it."""

import json

import pytest

from lossatlas import results_folder


def test_first_run_records_and_the_same_files_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results_folder.claim("out", ["a.yaml"], write=False)
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    results_folder.claim("out", ["a.yaml"], write=True)
    assert json.loads((tmp_path / "out" / results_folder.RECORD).read_text()) == {
        "configfiles": ["a.yaml"]
    }
    results_folder.claim("out", [str(tmp_path / "a.yaml")], write=True)  # same file, absolute


def test_other_files_are_refused_with_a_folder_of_their_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results_folder.claim("out", ["config/config.yaml"], write=True)
    with pytest.raises(results_folder.ForeignResults, match=r"results=out-relu\b"):
        results_folder.claim("out", ["relu.yaml", "config/config.yaml"], write=True)


def test_an_unreadable_record_is_named_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / results_folder.RECORD).write_text("{not json")
    with pytest.raises(results_folder.ForeignResults, match="unreadable"):
        results_folder.claim("out", ["a.yaml"], write=True)
    assert (tmp_path / "out" / results_folder.RECORD).read_text() == "{not json"
