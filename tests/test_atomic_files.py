"""The one way recallseg writes an output file, and the one check of an output location.

A write that fails partway keeps the previous file, leaves no temporary and no partial file, and
is an ``OutputError`` that names the target and why. A location that is, lies inside or holds an
input, a file where a folder is needed, or a place no file can be created in is refused, naming
the key, before anything is written.
"""

import errno
import tempfile

import pytest

from disks import leftovers, writes_fail_beyond
from recallseg.atomic_files import atomic_path, atomic_write, check_output_location, human_size
from recallseg.errors import ConfigError, OutputError, UserError


def test_a_write_that_fails_partway_keeps_the_previous_file_and_names_the_target(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with writes_fail_beyond(1000), pytest.raises(OutputError) as caught:
        with atomic_write(target) as handle:
            handle.write("x" * 100_000)
    error = caught.value
    assert isinstance(error, UserError) and isinstance(error, OSError) and error.errno == errno.EFBIG
    assert str(error).startswith(f"cannot write {target}: ") and "(the previous metrics.json is unchanged)" in str(error)
    assert error.filename == str(target) and "\n" not in str(error)
    assert target.read_text() == "previous" and leftovers(tmp_path) == []


def test_a_writer_given_a_file_name_replaces_the_target_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good model")

    def exporter_on_a_full_disk(name):
        with open(name, "wb") as handle:
            handle.write(b"half a mod")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() reports it: no file name

    with pytest.raises(OutputError, match=r"model.onnx: the disk is full \(the previous model.onnx is unchanged\); free space"):
        with atomic_path(target) as temporary:
            exporter_on_a_full_disk(temporary)
    assert target.read_bytes() == b"good model" and leftovers(tmp_path) == []
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"new model")
    assert target.read_bytes() == b"new model" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError, match=rf"cannot write {tmp_path}/out/color/a.png: {tmp_path}/out is a file, not a folder \(nothing was written\)"):
        with atomic_write(tmp_path / "out" / "color" / "a.png", "wb") as handle:
            handle.write(b"png")


def test_an_error_about_another_file_is_left_as_it_is(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "report.csv") as handle:
            handle.write((tmp_path / "missing-input.txt").read_text())
    assert leftovers(tmp_path) == [] and not (tmp_path / "report.csv").exists()


@pytest.mark.parametrize(
    "output, reads, file, relation",
    [
        ("data/masks/val", "data", False, "is inside dataset.root"),
        ("data", "data", False, "is dataset.root"),
        (".", "data", False, "holds dataset.root"),
        ("data/stats.json", "data", True, "is inside dataset.root"),
        ("best.pt", "best.pt", True, "is dataset.root"),
    ],
)
def test_a_location_over_what_the_command_reads_is_refused(tmp_path, monkeypatch, output, reads, file, relation):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "masks" / "val").mkdir(parents=True)
    (tmp_path / "best.pt").write_bytes(b"checkpoint")
    with pytest.raises(ConfigError, match=rf"^predictions.dir: {output} {relation} {reads}, which this command reads") as caught:
        check_output_location("predictions.dir", output, reads=[("dataset.root", reads)], file=file)
    assert f"choose a {'file' if file else 'folder'} outside {reads}" in str(caught.value)


def test_a_symlink_to_the_dataset_is_the_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(ConfigError, match="is inside dataset.root"):
        check_output_location("output_dir", tmp_path / "link" / "eval", reads=[("dataset.root", tmp_path / "data")])


def test_files_folders_and_unwritable_places_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(ConfigError, match=r"^output: .*a_file is a file, not a folder; give a folder"):
        check_output_location("output", tmp_path / "a_file")
    with pytest.raises(ConfigError, match=r"^output: .*a_file/color cannot be created: .*a_file is a file, not a folder"):
        check_output_location("output", tmp_path / "a_file" / "color")
    with pytest.raises(ConfigError, match=r"^output: .*a_folder is a folder, not a file; give a file name"):
        check_output_location("output", tmp_path / "a_folder", file=True)
    new = tmp_path / "new" / "deeper"
    assert check_output_location("output", new) == new and not (tmp_path / "new").exists()  # checking creates nothing

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ConfigError, match=r"^output: .*new/deeper cannot be written: the file system is read-only \(.*\); choose a location"):
        check_output_location("output", new)


def test_sizes_read_in_the_unit_that_fits():
    assert [human_size(n) for n in (800, 1000, 999_999, 12_345_678, 3 * 10**9)] == ["800 bytes", "1.0 KB", "1.0 MB", "12.3 MB", "3.0 GB"]
