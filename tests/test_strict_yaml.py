import pytest

from cbtgym.strict_yaml import DuplicateKeyError, load_yaml


def test_reads_nested_yaml_like_safe_load():
    assert load_yaml("x.yaml", text="a: 1\nb: [1, {c: 2}]\n") == {"a": 1, "b": [1, {"c": 2}]}


def test_a_repeated_key_names_the_file_line_and_key(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text("k: 2\nother: 1\nk: 6\n")
    with pytest.raises(DuplicateKeyError, match=r"conf.yaml:3: key 'k' appears twice .*line 1"):
        load_yaml(path)


def test_a_repeated_key_in_a_nested_mapping_is_caught():
    with pytest.raises(DuplicateKeyError, match="'c'"):
        load_yaml("x.yaml", text="b:\n  c: 1\n  c: 2\n")
