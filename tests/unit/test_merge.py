"""Import merge rules: dicts merge, lists append, the importer wins, imports may not disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.recipe.load import load_recipe


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "recipes" / "r.yaml"


BASE = "layers:\n  - name: base\n    files: [{dest: /base, content: b}]\n"


def test_dicts_merge_lists_append_importer_wins(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/base.yaml": BASE + "image:\n  env: {A: '1', B: '1'}\n  user: nobody\n  cmd: [bash]\n",
        "recipes/r.yaml": "imports: [base]\nimage:\n  env: {B: '2', C: '3'}\n  user: root\n  cmd: [python3]\n"
                          "layers:\n  - name: top\n    files: [{dest: /top, content: t}]\n",
    })
    loaded = load_recipe(recipe, tmp_path)
    assert loaded.image["env"] == {"A": "1", "B": "2", "C": "3"}
    assert loaded.image["user"] == "root"
    assert loaded.image["cmd"] == ["python3"]  # argv lists are one value, not appended
    assert [layer.name for layer in loaded.layers] == ["base", "top"]
    assert loaded.layers[0].location.file == "layers/base.yaml"
    assert loaded.layers[1].location.file == "recipes/r.yaml"


def test_conflict_between_imports_names_both_files(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/a.yaml": "image:\n  user: alice\n",
        "layers/b.yaml": "image:\n  user: bob\n",
        "recipes/r.yaml": "imports: [a, b]\n",
    })
    with pytest.raises(DreamError) as caught:
        load_recipe(recipe, tmp_path)
    message = str(caught.value)
    assert "layers/a.yaml:2" in message and "layers/b.yaml:2" in message
    assert "image.user" in message


def test_importer_settles_a_conflict(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/a.yaml": "image:\n  user: alice\n",
        "layers/b.yaml": "image:\n  user: bob\n",
        "recipes/r.yaml": "imports: [a, b]\nimage:\n  user: carol\n",
    })
    assert load_recipe(recipe, tmp_path).image["user"] == "carol"


def test_diamond_import_is_included_once(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/base.yaml": BASE,
        "layers/a.yaml": "imports: [base]\n",
        "layers/b.yaml": "imports: [base]\n",
        "recipes/r.yaml": "imports: [a, b]\n",
    })
    assert [layer.name for layer in load_recipe(recipe, tmp_path).layers] == ["base"]


def test_src_is_relative_to_the_file_that_names_it(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/files/motd": "hi\n",
        "layers/motd.yaml": "layers:\n  - name: motd\n    files: [{dest: /etc/motd, src: files/motd}]\n",
        "recipes/r.yaml": "imports: [motd]\n",
    })
    layer = load_recipe(recipe, tmp_path).layers[0]
    assert layer.spec[0]["src"] == str(tmp_path / "layers" / "files" / "motd")


def test_errors_in_a_module_point_at_the_module(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/bad.yaml": "image:\n  workdir: relative\n",
        "recipes/r.yaml": "imports: [bad]\n",
    })
    with pytest.raises(DreamError) as caught:
        load_recipe(recipe, tmp_path)
    assert str(caught.value).startswith("layers/bad.yaml:2: image.workdir:")


def test_layers_with_the_same_name_merge_in_place(tmp_path: Path) -> None:
    recipe = write(tmp_path, {
        "layers/base.yaml": "layers:\n  - name: sys\n    comment: base\n    files: [{dest: /a, content: a}]\n"
                            "  - name: other\n    files: [{dest: /o, content: o}]\n",
        "layers/tools.yaml": "layers:\n  - name: sys\n    files: [{dest: /b, content: b}]\n",
        "recipes/r.yaml": "imports: [base, tools]\nlayers:\n  - name: sys\n    files: [{dest: /c, mode: 644, content: c}]\n",
    })
    with pytest.raises(Exception) as info:
        load_recipe(recipe, tmp_path)
    # the merged layer keeps the importing file's line for its own bad field
    assert "recipes/r.yaml:4: layers[0].files[2].mode" in str(info.value)
    (tmp_path / "recipes/r.yaml").write_text(
        "imports: [base, tools]\nlayers:\n  - name: sys\n    files: [{dest: /c, content: c}]\n")
    loaded = load_recipe(recipe, tmp_path)
    assert [layer.name for layer in loaded.layers] == ["sys", "other"]
    assert [item["dest"] for item in loaded.layers[0].spec] == ["/a", "/b", "/c"]
    assert loaded.layers[0].comment == "base"
