"""The README's embedding example runs as written, on the shipped default model."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    marker = text.index("<!-- readme-example")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def test_embedding_example_runs(tmp_path, monkeypatch, capsys):
    code = _example()
    assert 5 <= len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert (tmp_path / "spots.csv").read_text().startswith("z,y,x,score,intensity,z_um,y_um,x_um")
    assert out.strip()


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert "dmdet-infer examples/virus_snr4.tif -o spots.csv" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert blocks[1].strip().split("&& ", 3)[-1] in ci
