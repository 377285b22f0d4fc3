"""Names and links from outside stay outside: model names resolve only inside the model folders, and
the start-up copy of the example photos never writes through a link (issue 11, findings 5 and 7)."""
import os
import shutil

import pytest

from conftest import DATA, ROOT, pack_module

host = pack_module("nodes.host")
nodes = pack_module("nodes.hidiff")
TINY = os.path.join(DATA, "hidiff_tiny")


@pytest.fixture
def outside(tmp_path):
    """A real HI-Diff model beside (not inside) the model folder."""
    folder = tmp_path / "outside" / "HI_Diff_GoPro"
    shutil.copytree(TINY, folder)
    return folder


ESCAPES = ["../../outside/HI_Diff_GoPro", "sub/../../../outside/HI_Diff_GoPro", "..\\..\\outside\\HI_Diff_GoPro",
           "/etc", "C:\\Windows", "", ".", "a\0b"]


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_leave_the_model_folders_are_refused(models_dir, outside, name):
    with pytest.raises(FileNotFoundError, match="not found"):
        host.resolve_model(name)


def test_an_absolute_path_never_loads_through_the_node(models_dir, outside):
    with pytest.raises(FileNotFoundError):
        nodes.HIDiffLoader().load(str(outside))
    with pytest.raises(FileNotFoundError):
        nodes.HIDiffLoader().load("../../outside/HI_Diff_GoPro")


def test_the_error_does_not_tell_whether_a_file_exists_elsewhere(models_dir, outside):
    messages = []
    for name in ("../../outside/HI_Diff_GoPro", "../../outside/NOTHING_HERE"):
        with pytest.raises(FileNotFoundError) as error:
            host.resolve_model(name)
        messages.append(str(error.value).replace(repr(name), "NAME"))
    assert messages[0] == messages[1]


def test_names_inside_and_links_placed_in_the_folder_still_resolve(models_dir, outside):
    os.symlink(outside, models_dir / "linked")
    (models_dir / "sub").mkdir()
    assert host.resolve_model("linked") == str(models_dir / "linked")
    assert host.resolve_model("./linked/") == str(models_dir / "linked")
    with pytest.raises(FileNotFoundError):
        host.resolve_model("sub/../linked")
    assert host.resolve_model("sub") == str(models_dir / "sub")


def _examples():
    return sorted(n for n in os.listdir(os.path.join(ROOT, "example_images")) if n.lower().endswith(host.EXAMPLE_SUFFIXES))


def test_start_up_never_writes_through_a_dangling_link(tmp_path):
    input_dir, elsewhere = tmp_path / "input", tmp_path / "elsewhere"
    input_dir.mkdir()
    elsewhere.mkdir()
    name = _examples()[0]
    os.symlink(elsewhere / "written_through.png", input_dir / name)
    copied = host.copy_examples(str(input_dir))
    assert name not in copied and copied == _examples()[1:]
    assert not (elsewhere / "written_through.png").exists()
    assert os.path.islink(input_dir / name)


def test_start_up_never_replaces_a_file_a_link_points_to(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's photo")
    os.symlink(mine, input_dir / _examples()[0])
    host.copy_examples(str(input_dir))
    assert mine.read_bytes() == b"the user's photo"
