"""The README's gallery comes from a full repro run: every gallery file is a figure its item
renders, the README shows exactly those files, and a quick or incomplete run is refused."""
import json
import re
import shutil
from pathlib import Path

import pytest

from dpolab.errors import InputError
from dpolab.paper_repro import gallery

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_and_docs_gallery_show_exactly_the_gallery_table():
    shown = re.findall(r"docs/gallery/([\w.]+\.png)", (REPO / "README.md").read_text(encoding="utf-8"))
    assert sorted(shown) == sorted(f"{stem}.png" for stem in gallery.GALLERY)
    assert sorted(p.name for p in (REPO / "docs" / "gallery").glob("*.png")) == sorted(shown)


def test_each_gallery_figure_is_rendered_by_its_item_and_a_quick_run_is_refused(repro_quick, tmp_path):
    _, out = repro_quick
    with pytest.raises(InputError, match="full-size repro run, not a quick 'repro' run"):
        gallery.sources(out)
    # the same files under a full-size manifest: the map names real figures of real items
    full = tmp_path / "repro"
    shutil.copytree(out, full)
    manifest = json.loads((full / "manifest.json").read_text())
    (full / "manifest.json").write_text(json.dumps(manifest | {"quick": False}))
    copied = gallery.copy_gallery(full, tmp_path / "g")
    assert sorted(p.name for p in copied) == sorted(f"{s}.png" for s in gallery.GALLERY)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in copied)
    # an item that did not run is named, and nothing is copied
    manifest["items"]["chen-ranking"] = {"status": "skipped", "reason": "no data", "files": []}
    (full / "manifest.json").write_text(json.dumps(manifest | {"quick": False}))
    with pytest.raises(InputError, match="item 'chen-ranking' did not render chen_threshold.png .no data."):
        gallery.copy_gallery(full, tmp_path / "h")
    assert not (tmp_path / "h").exists()
    assert gallery.main([str(tmp_path / "nothing"), str(tmp_path / "i")]) == 2
