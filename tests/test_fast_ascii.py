"""The fast path for plain ASCII column files gives exactly the curves sasdata gives.

Every file is read both ways (``CurveLoader(fast_ascii=False)`` is the sasdata
path): SasView's example data shipped in the installed sasdata wheel and
generated files (headers, comments, separators, 2-4 columns, q = 0, unsorted q,
files the fast path must leave to sasdata).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sasdata

from sasview_bnn_plugin.io.fast_ascii import read_plain_ascii
from sasview_bnn_plugin.io.loading import CurveLoader

EXAMPLES = Path(sasdata.__file__).parent / "example_data" / "1d_data"


def assert_same_curves(path: Path) -> None:
    fast = CurveLoader(fast_ascii=True).load(path)
    slow = CurveLoader(fast_ascii=False).load(path)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert (a.source, a.dataset, a.error, a.notes) == (b.source, b.dataset, b.error, b.notes)
        assert (a.q_unit, a.q_unit_source, a.metadata) == (b.q_unit, b.q_unit_source, b.metadata)
        for name in ("q", "intensity", "d_intensity", "dq"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape, name
                np.testing.assert_array_equal(x, y, err_msg=name)


def example_text_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in {".txt", ".dat", ".csv", ".abs"})


def test_the_example_data_are_there():
    assert len(example_text_files()) >= 20


@pytest.mark.parametrize("path", example_text_files(), ids=lambda p: p.name)
def test_example_data_read_the_same(path):
    assert_same_curves(path)


def test_most_plain_example_files_take_the_fast_path():
    fast = [p for p in example_text_files() if read_plain_ascii(p) is not None]
    assert len(fast) >= 10, fast


GENERATED = {
    "three_columns.txt": "".join(f"{0.001 * (k + 1):.6g} {100 / (k + 1):.6g} {1 / (k + 1):.4g}\n" for k in range(40)),
    "two_columns.txt": "".join(f"{0.01 * (k + 1)} {k + 3}\n" for k in range(10)),
    "four_columns.txt": "".join(f"{0.01 * (k + 1)}\t{k + 3}\t0.5\t{0.001 * k}\n" for k in range(10)),
    "header_nm.txt": "# q (1/nm)  I  dI\n" + "".join(f"{0.1 * (k + 1)} {50 - k} 1\n" for k in range(12)),
    "header_angstrom.txt": "Sample: silica\nQ [A^-1], I, dI\n\n" + "".join(f"{0.01 * (k + 1)}, {50 - k}, 1\n" for k in range(12)),
    "semicolons.txt": "".join(f"{0.02 * (k + 1)};{9 - 0.1 * k}\n" for k in range(8)),
    "zero_q_unsorted.txt": "0 5 1\n0.3 1 0.1\n0.1 3 0.2\n0.2 2 0.1\n0.1 2.5 0.2\n0.05 4 0.3\n0.4 0.5 0.1\n",
    "blank_lines.txt": "\n".join(f"{0.01 * (k + 1)} {k + 1}\n" for k in range(9)),
    "footer.txt": "".join(f"{0.01 * (k + 1)} {k + 1} 1\n" for k in range(9)) + "end of data\n",
    "numeric_header.txt": "2026 12 1\n" + "".join(f"{0.01 * (k + 1)} {k + 1}\n" for k in range(9)),
    "mixed_columns.txt": "".join(f"{0.01 * (k + 1)} {k + 1}" + (" 1\n" if k % 2 else "\n") for k in range(12)),
    "too_few.txt": "0.1 1\n0.2 2\n0.3 3\n",
    "nan.txt": "".join(f"{0.01 * (k + 1)} {'nan' if k == 3 else k + 1}\n" for k in range(9)),
    "comment_inside.txt": "".join(f"{0.01 * (k + 1)} {k + 1}\n" + ("# gap\n" if k == 6 else "") for k in range(12)),
    "wide.txt": "".join(f"{0.01 * (k + 1)} {k + 1} 1 2 3 4 5 6\n" for k in range(9)),
    "empty.txt": "",
    "words.txt": "nothing to see here\nat all\n",
    "cp1252.txt": None,
    # the edges of the one-call table reader (numpy's loadtxt) against float() line by line and sasdata
    "whitespace_lines.txt": "".join(f"{0.01 * (k + 1)}  \t{k + 1}\n" + ("   \t \n" if k % 3 == 0 else "") for k in range(9)),
    "trailing_comment.txt": "".join(f"{0.01 * (k + 1)} {k + 1}" + (" # spike\n" if k == 4 else "\n") for k in range(9)),
    "underscores.txt": "".join(f"{0.01 * (k + 1)} 1_{k + 1}\n" for k in range(9)),
    "no_break_space.txt": "".join(f"{0.01 * (k + 1)}\xa0{k + 1}\n" for k in range(9)),
    "exponents_and_signs.txt": "".join(f"+{0.01 * (k + 1):.3E} {(k + 1) * 1e-5:e} -{k}.5e-1\n" for k in range(9)),
    "comma_inside.txt": "".join(f"{0.01 * (k + 1)} {k + 1}" + (",5\n" if k == 5 else "\n") for k in range(9)),
    "header_after_numbers.txt": "# q (1/nm) I\n" + "1.0 2.0, 3.0\n" * 6 + "# q (1/A)\n" + "".join(f"{0.01 * (k + 1)} {k + 1}\n" for k in range(9)),
    "not_txt.dat": "".join(f"{0.01 * (k + 1)} {k + 1} 1\n" for k in range(9)),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_files_read_the_same(tmp_path, name):
    path = tmp_path / name
    text = GENERATED[name]
    if text is None:
        path.write_bytes("# intensit\xe9 \xb0C\n".encode("cp1252") + b"".join(f"{0.01 * (k + 1)} {k + 1}\n".encode() for k in range(9)))
    else:
        path.write_text(text)
    assert_same_curves(path)


@pytest.mark.parametrize("name, fast", [("three_columns.txt", True), ("header_nm.txt", True), ("zero_q_unsorted.txt", True),
                                        ("footer.txt", False), ("nan.txt", False), ("not_txt.dat", False), ("empty.txt", False)])
def test_which_files_take_the_fast_path(tmp_path, name, fast):
    path = tmp_path / name
    path.write_text(GENERATED[name])
    assert (read_plain_ascii(path) is not None) == fast


def test_a_header_unit_is_read_on_the_fast_path(tmp_path):
    path = tmp_path / "nm.txt"
    path.write_text(GENERATED["header_nm.txt"])
    (curve,) = CurveLoader().load(path)
    assert curve.q_unit == "1/nm" and curve.q_unit_source == "file"
