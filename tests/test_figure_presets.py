"""Figure presets (`--style`, `--width`; `dpolab.figures.style`): a figure is saved at the width
asked for, in the style's font sizes, with TrueType fonts embedded, and a quick run marks every
figure; a bad width is refused before any work."""
import re

import matplotlib.pyplot as plt
import pytest

from dpolab.cli import _parser, main
from dpolab.errors import InputError
from dpolab.figures import style


def _pdf_width_inches(path):
    raw = path.read_bytes()
    box = re.search(rb"/MediaBox \[ *([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", raw)
    return (float(box.group(3)) - float(box.group(1))) / 72, raw


def _two_panel(out):
    with style.figure_context():
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0))
        for ax in axes:
            ax.plot([1, 2, 3], [3, 1, 2], label="r")
            ax.set_xlabel("step t")
            ax.legend()
        fig.suptitle("a suptitle")
        assert plt.rcParams["axes.labelsize"] == style.STYLES[style._preset["style"]].get("axes.labelsize", 9)
        return style.save(fig, out, "f")


@pytest.mark.parametrize("width", ["column", "text", "4.5"])
def test_a_figure_is_saved_at_the_width_asked_for(tmp_path, width):
    inches = style.parse_width(width)
    with style.preset("paper", inches), style.marked("quick run"):
        pdf, png = _two_panel(tmp_path)
    got, raw = _pdf_width_inches(pdf)
    # constrained layout fills the figure up to its 3/72 in padding; the tight box adds 0.02 in a side
    assert inches - 2 * 3 / 72 <= got <= inches + 2 * 0.02, (width, got)
    assert b"/FontFile2" in raw and b"/Type3" not in raw  # TrueType (Type 42) embedded, no Type 3
    assert abs(plt.imread(png).shape[1] / style.PNG_DPI - got) < 0.05


def test_without_a_preset_figures_keep_their_natural_size_and_have_no_mark(tmp_path):
    pdf, _ = _two_panel(tmp_path / "natural")
    natural, raw = _pdf_width_inches(pdf)
    assert natural > 5.5  # 7 in drawn, cropped to the tight box (not 3.25 or 6.75 laid out again)
    with style.marked("quick run"):
        marked, _ = _two_panel(tmp_path / "marked")
    assert marked.read_bytes() != pdf.read_bytes()  # the mark is drawn
    assert style._preset == {"style": "screen", "width": None, "mark": None}  # restored on exit


@pytest.mark.parametrize("bad", ["0", "-3", "0.5", "21", "inf", "nan", "wide", ""])
def test_a_bad_width_is_refused_naming_the_flag(bad):
    with pytest.raises(InputError, match=r"--width=.* is not allowed: width must be one of \('column', 'text'\)"):
        style.parse_width(bad)
    with pytest.raises(InputError, match="--style='poster' is not allowed"):
        with style.preset("poster"):
            pass


def test_the_command_line_offers_exactly_the_presets():
    for command in (["verify"], ["repro", "--out", "x"], ["audit", "--out", "x"]):
        action = next(a for a in _parser()._subparsers._group_actions[0].choices[command[0]]._actions
                      if a.dest == "style")
        assert tuple(action.choices) == tuple(style.STYLES)


def test_a_bad_width_stops_repro_before_it_writes_anything(tmp_path, capsys):
    assert main(["repro", "--quick", "--only", "chen-ranking", "--width", "huge", "--out", str(tmp_path / "o")]) == 2
    assert "--width='huge' is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
