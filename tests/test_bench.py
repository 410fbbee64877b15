"""mbus-bench runs end to end with tiny counts (the figures are noise then; nothing here
asserts on a timing), writes the README block, and the MicroPython part reports a steady
state that allocates nothing."""
import os
import re

import pytest

from mbus_tools import bench

README = """# x

## Tests

text

## Benchmarks

<!-- bench:start -->
old figures
<!-- bench:end -->

## Licence
"""


def test_quick_run_prints_every_figure_and_writes_the_block(tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text(README)
    assert bench.main(["--quick", "--write-readme", "--readme", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("floor: canned reply", "`mbus-slave --device tcp:PORT`", "p50 / floor",
                 "REQ_UD2, toggled FCB (fresh telegram), 1 record", "bus of 250 meters",
                 "heap allocated per request", "heap of a 10-record meter",
                 "`.mpy` size of everything that ships", "rewrote the bench block"):
        assert text in out, text
    assert "Note:" not in out, out          # every part ran (TCP, MicroPython, mpy-cross)
    new = path.read_text()
    assert "old figures" not in new and "| floor: canned reply, no parsing |" in new
    # only the block changed
    head, rest = new.split("<!-- bench:start -->\n")
    block, tail = rest.split("<!-- bench:end -->")
    assert head == README.split("<!-- bench:start -->\n")[0]
    assert tail == README.split("<!-- bench:end -->")[1]
    assert block.strip() and block in out
    # the numbers are numbers
    assert re.search(r"\| `mbus-slave --device tcp:PORT` \(poller, LineServer\) "
                     r"\| [\d.]+ \| [\d.]+ \| \d+ \| [\d.]+ \| [\d.]+x \|", block)


def test_readme_without_markers_is_an_error(tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text("# no block here\n")
    assert bench.main(["--quick", "--no-tcp", "--no-upy", "--write-readme",
                       "--readme", str(path)]) == 1
    assert "has no <!-- bench:start -->" in capsys.readouterr().err
    assert path.read_text() == "# no block here\n"


def test_micropython_steady_state_allocates_nothing():
    res, err = bench.run_micropython(200)
    assert err is None, err
    assert res["runtime"] == "micropython"
    assert res["alloc_per_request"] == 0
    assert res["alloc_per_repeat"] == 0
    assert res["alloc_per_request_bus250"] == 0
    assert 0 < res["meter10_heap"] <= res["meter10_bus_heap"]


def test_mpy_sizes_cover_every_shipped_file():
    sizes, err = bench.mpy_sizes(bench.project_root())
    assert err is None, err
    root = bench.project_root()
    names = set(sizes["files"])
    for name in os.listdir(os.path.join(root, "mbus_core")):
        if name.endswith(".py"):
            assert "mbus_core/" + name in names
    assert "ports/line.py" in names
    assert sizes["total"] == sizes["core"] + sizes["ports"] > 0


def test_cpu_layouts():
    layouts = bench.cpu_layouts()
    assert layouts and all(name in ("split", "same", "unpinned") for name, _, _ in layouts)


@pytest.mark.parametrize("values,q,want", [([], 0.5, 0.0), ([5], 0.99, 5),
                                           (list(range(101)), 0.5, 50),
                                           (list(range(101)), 0.99, 99)])
def test_percentile(values, q, want):
    assert bench.percentile(values, q) == want
