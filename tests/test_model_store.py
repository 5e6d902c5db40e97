"""The versioned model store: names, atomic publishing, dead runs, roll-back (modelstore.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.tree import DecisionTreeClassifier

from beam_dsl.ir.train import save_path_problem
from beam_dsl.transforms.training.modelstore import (
    KEEP_VERSIONS,
    ModelStore,
    ModelStoreError,
    key_id,
    key_name,
    load_model,
)

TREE = ["sklearn.tree._tree.Tree"]
MODEL = DecisionTreeClassifier(random_state=0).fit([[0], [1]], [0, 1])


def publish(store, run, keys, promoted=True):
    store.begin(run)
    entries = []
    for key in keys:
        file, sha = store.save(MODEL, run, key)
        entries.append({"key": list(key), "file": file, "sha256": sha, "promoted": promoted})
    return store.publish(run, {"models": entries})


@given(st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=3))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_key_names_are_bounded_safe_and_distinct_from_other_keys(values):
    name = key_name(values)
    assert len(name.encode()) <= 40 + 13
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    assert name == name.lower()  # no two names differ by case alone
    other = [*values[:-1], values[-1] + "x"]
    assert key_name(other) != name


def test_awkward_keys_each_get_their_own_file(tmp_path):
    store = ModelStore(str(tmp_path / "models" / "income" / "{key}.skops"))
    keys = [("Bachelors",), ("bachelors",), ("../../etc/passwd",), ("a/b",), ("a\x00b",),
            ("中文" * 30,), ("x" * 1000,), ("",), (None,), (1,), ("1",)]
    version = publish(store, "r1", keys)
    promoted = store.promoted()
    assert set(promoted) == {key_id(k) for k in keys}
    assert len(set(promoted.values())) == len(keys)
    for path in promoted.values():
        assert os.path.dirname(path) == version
        assert load_model(path, trusted=TREE).predict([[1]])[0] == 1


def test_publishing_swaps_the_whole_set_and_keeps_a_few_versions(tmp_path):
    template = str(tmp_path / "models" / "income" / "{key}.skops")
    store = ModelStore(template)
    first = publish(store, "r1", [("a",), ("b",)])
    assert os.path.islink(tmp_path / "models" / "income")
    assert store.current() == first
    publish(store, "r2", [("a",)])
    assert set(store.promoted()) == {key_id(("a",))}
    for run in range(3, 8):
        publish(store, f"r{run}", [("c",)])
    assert len(store.versions()) == KEEP_VERSIONS
    assert os.listdir(store.versions_dir).count(".staging-r7") == 0
    store.roll_back(os.path.basename(store.versions()[0]))
    assert store.current() == store.versions()[0]


def test_a_single_model_path_is_itself_the_pointer(tmp_path):
    store = ModelStore(str(tmp_path / "models" / "global.skops"))
    publish(store, "r1", [()])
    assert os.path.islink(tmp_path / "models" / "global.skops")
    model = load_model(str(tmp_path / "models" / "global.skops"), trusted=TREE)
    assert model.predict([[0]])[0] == 0
    assert store.manifest()["models"][0]["file"] == "global.skops"


def test_a_folder_that_is_not_a_store_is_refused_before_training(tmp_path):
    (tmp_path / "models" / "income").mkdir(parents=True)
    store = ModelStore(str(tmp_path / "models" / "income" / "{key}.skops"))
    with pytest.raises(ModelStoreError, match="not a beam_dsl model store"):
        store.begin("r1")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelStoreError, match="cannot write"):
        ModelStore(str(tmp_path / "file" / "m" / "{key}.skops")).begin("r1")


@pytest.mark.parametrize(
    "template, why",
    [
        ("models/{key}", "no model format"),
        ("models/income_{key}.skops", "folder of its own"),
        ("{key}.skops", "folder of its own"),
        ("models/{key}/../../x_{key}.skops", "'..'"),
    ],
)
def test_save_to_templates_that_cannot_work_say_why(template, why):
    assert why in save_path_problem(template)
    assert save_path_problem("models/income/{key}.skops") is None


def test_a_run_that_died_leaves_the_previous_set_and_the_next_run_cleans_up(tmp_path):
    template = str(tmp_path / "models" / "income" / "{key}.skops")
    store = ModelStore(template)
    publish(store, "good", [("a",), ("b",)])
    script = textwrap.dedent(f"""
        import os, signal
        from sklearn.tree import DecisionTreeClassifier
        from beam_dsl.transforms.training.modelstore import ModelStore
        m = DecisionTreeClassifier().fit([[0], [1]], [0, 1])
        store = ModelStore({template!r})
        store.begin("dead")
        store.save(m, "dead", ("a",))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert os.path.isdir(os.path.join(store.versions_dir, ".staging-dead"))
    assert set(store.promoted()) == {key_id(("a",)), key_id(("b",))}
    publish(store, "next", [("c",)])
    assert not any(n.startswith(".staging-") for n in os.listdir(store.versions_dir))


def test_the_manifest_is_read_from_the_version_the_pointer_names(tmp_path):
    store = ModelStore(str(tmp_path / "m" / "{key}.skops"))
    version = publish(store, "r1", [("a",)])
    with open(os.path.join(version, "manifest.json")) as f:
        assert json.load(f)["models"][0]["key"] == ["a"]
    assert store.manifest() == store.manifest(version)


def test_a_set_copied_without_its_symlink_is_still_read(tmp_path):
    import shutil

    store = ModelStore(str(tmp_path / "a" / "income" / "{key}.skops"))
    publish(store, "r1", [("x",)])
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # follows the symlink: a plain folder
    copy = ModelStore(str(tmp_path / "b" / "income" / "{key}.skops"))
    assert not os.path.islink(tmp_path / "b" / "income")
    assert set(copy.promoted()) == {key_id(("x",))}
    with pytest.raises(ModelStoreError, match="not a beam_dsl model store"):
        copy.begin("r2")  # but it is not a store to publish to
