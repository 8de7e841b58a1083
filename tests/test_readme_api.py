"""The README's Python API example runs as written, on tiny offline models, and the common mistake
`Matcher("index/")` says which constructor to use."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from animatch import Matcher

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_example() -> str:
    section = README.read_text().split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_readme_python_api_example_runs(synth_root, synth_index_dir, clip_matched_dir, llava_tiny_dir, tmp_path,
                                        monkeypatch, capsys):
    # The names the example uses, made real: its index, run dir, images and a local dir named like the hub id.
    for link, target in (("index", synth_index_dir), ("runs/clip/best", clip_matched_dir),
                         ("llava-hf/llava-1.5-7b-hf", llava_tiny_dir)):
        (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / link).symlink_to(target, target_is_directory=True)
    images = sorted((synth_root / "images").rglob("*.png"))
    for name, image in zip(("a.png", "b.png", "frieren.png"), images):
        shutil.copy(image, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_api_example(), str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[:3]] == ["1", "2", "3"]  # three search hits, ranked
    assert len(namespace["hits"]) == 3 and tuple(namespace["result"].cosine.shape) == (2, 2)
    assert tuple(namespace["similarity"].shape) == (2, 2) and namespace["ok"] == [0, 1]
    assert set(namespace["verdict"]) >= {"score", "match", "analysis"}


def test_matcher_given_a_path_names_the_constructor_to_use(synth_index_dir, clip_tiny_dir):
    with pytest.raises(TypeError, match=r"Matcher\.from_index\("):
        Matcher(str(synth_index_dir))
    with pytest.raises(TypeError, match=r"Matcher\.from_model\("):
        Matcher(clip_tiny_dir)


def test_matcher_is_listed_on_the_package_without_importing_torch():
    code = "import sys, animatch as a; print('Matcher' in dir(a), 'Matcher' in a.__all__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "False"]
