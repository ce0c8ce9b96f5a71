"""The real dataset loaders on tiny files in the real formats (tests/dataset_files.py): values round trip,
each kind of damage is a one-line error naming the path and the command that fetches the data, and
`data.download=true` fetches from file:// copies, verifies md5 sums and renames into place."""
import gzip
import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import run_command, run_in_process
from dataset_files import PTB_TEXT, idx_bytes, python2_pickle, write_cifar10, write_cifar_batch, write_mnist, write_ptb
from replicate.config import ConfigError, DataConfig
from replicate.data import load_dataset
from replicate.datasets import DatasetError, cifar10, mnist, ptb
from replicate.datasets.download import Download, download


def load(root, name, paper_id="some_entry", **settings):
    cfg = OmegaConf.structured(DataConfig(name=name, root=str(root), **settings))
    return load_dataset(cfg, dtype=torch.float32, device="cpu", paper_id=paper_id)


def assert_fetch_error(root, name, *fragments):
    with pytest.raises(DatasetError) as caught:
        load(root, name)
    message = str(caught.value)
    assert "\n" not in message
    assert f"python -m replicate paper=some_entry data.root={Path(root).resolve()} data.download=true" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- MNIST ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_back_the_pixels_and_labels_written(tmp_path, gz):
    written = write_mnist(tmp_path, n_train=20, n_test=10, gz=gz)
    data = load(tmp_path, "mnist")
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    # x / 255 computed in float32, as Keras's `x_train /= 255` does
    expected = torch.from_numpy(written["train"][0]).float()[:, None] / 255
    assert torch.equal(data.x_train, expected)
    assert data.y_train.tolist() == written["train"][1].tolist()
    assert data.y_test.tolist() == written["t10k"][1].tolist()
    assert data.num_classes == 10 and data.x_valid is None


def test_mnist_scaling_holdout_and_flattening_follow_the_config(tmp_path):
    written = write_mnist(tmp_path, n_train=20)
    data = load(tmp_path, "mnist", pixel_divisor=256.0, mean=[0.1307], std=[0.3081], holdout=5, flatten=True)
    images, labels = written["train"]
    expected = ((torch.from_numpy(images).float() / 256 - 0.1307) / 0.3081).flatten(1)
    assert data.x_train.shape == (15, 784) and data.x_valid.shape == (5, 784)
    assert torch.equal(data.x_train, expected[:15]) and torch.equal(data.x_valid, expected[15:])  # the last 5, in order
    assert data.y_valid.tolist() == labels[15:].tolist()
    # Caffe's `scale: 0.00390625` is exactly 1/256: multiplying and dividing agree bit for bit
    assert torch.equal(torch.from_numpy(images).float() * 0.00390625, torch.from_numpy(images).float() / 256)


def test_mnist_prefers_the_gz_when_both_copies_are_present(tmp_path):
    written = write_mnist(tmp_path, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file")  # a stale plain copy beside the .gz
    assert load(tmp_path, "mnist").y_train.tolist() == written["train"][1].tolist()


def damage_header(path):
    path.write_bytes(b"\x00\x00\x08\x02" + path.read_bytes()[4:])  # a 2-D magic number in a 3-D file


@pytest.mark.parametrize("damage, fragment", [
    (lambda path: path.unlink(), "not found in"),
    (damage_header, "magic number 0x00000802, expected 0x00000803"),
    (lambda path: path.write_bytes(path.read_bytes()[:-7]), "but its header [20, 28, 28] needs"),
    (lambda path: path.write_bytes(path.read_bytes() + b"\x00"), "but its header [20, 28, 28] needs"),
    (lambda path: path.write_bytes(b"\x00\x00"), "shorter than the IDX header"),
])
def test_each_kind_of_damage_to_an_mnist_file_is_one_line_naming_it(tmp_path, damage, fragment):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    damage(path)
    assert_fetch_error(tmp_path, "mnist", fragment, "train-images-idx3-ubyte")


def test_a_cut_gzip_file_and_disagreeing_counts_are_errors(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    assert_fetch_error(tmp_path, "mnist", str(path), "cannot decompress")
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(9, dtype=np.uint8))))  # 9 labels for 10 images
    assert_fetch_error(tmp_path, "mnist", "holds 10 images but t10k-labels-idx1-ubyte 9 labels")
    path.write_bytes(gzip.compress(idx_bytes(np.full(10, 10, dtype=np.uint8))))
    assert_fetch_error(tmp_path, "mnist", "holds label 10")


def test_an_absent_dataset_names_the_folder_looked_in(tmp_path):
    message = assert_fetch_error(tmp_path, "mnist", "train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)")
    assert str(tmp_path / "MNIST" / "raw") in message


# --- CIFAR-10 ------------------------------------------------------------------------------------

def test_cifar10_reads_back_the_batches_in_order(tmp_path):
    written = write_cifar10(tmp_path, per_batch=4, n_test=3)
    data = load(tmp_path, "cifar10", pixel_divisor=1.0)
    pixels, labels = written["train"]
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    # a row is the red plane, then green, then blue, each 32 rows of 32: NCHW is a reshape
    assert torch.equal(data.x_train, torch.from_numpy(pixels.reshape(20, 3, 32, 32)).float())
    assert data.x_train[0, 1, 0, 0] == float(pixels[0, 1024])  # the first green value
    assert data.y_train.tolist() == labels and data.y_test.tolist() == written["test"][1]
    assert data.description["classes"][0] == "airplane"


def test_cifar10_standardises_each_channel(tmp_path):
    written = write_cifar10(tmp_path)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    data = load(tmp_path, "cifar10", mean=mean, std=std)
    x = torch.from_numpy(written["test"][0].reshape(-1, 3, 32, 32)).float() / 255
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(data.x_test, expected)
    with pytest.raises(ConfigError, match="data.mean has 1 value"):
        load(tmp_path, "cifar10", mean=[0.5])
    with pytest.raises(ConfigError, match="data.scaling=minmax applies to mnist1d"):
        load(tmp_path, "cifar10", scaling="minmax")


class RunsCode:
    """Unpickling this would call os.system: a pickle is code, which the restricted unpickler must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_cifar10_refuses_a_pickle_that_names_anything_but_arrays(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "code-ran"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(python2_pickle({b"data": RunsCode(marker), b"labels": []}))
    assert_fetch_error(tmp_path, "cifar10", str(path), "names posix.system")
    assert not marker.exists()


@pytest.mark.parametrize("damage, fragment", [
    (lambda path: path.write_bytes(path.read_bytes()[:-100]), "cannot unpickle"),
    (lambda path: path.unlink(), "data_batch_3 not found in"),
    (lambda path: write_cifar_batch(path, np.zeros((4, 3071), np.uint8), [0] * 4), "expected uint8 [N, 3072]"),
    (lambda path: write_cifar_batch(path, np.zeros((4, 3072), np.uint8), [0] * 3), "4 images but b'labels'"),
    (lambda path: write_cifar_batch(path, np.zeros((2, 3072), np.uint8), [0, 10]), "labels outside 0..9"),
    (lambda path: path.write_bytes(python2_pickle([1, 2])), "holds a list, not a dict"),
])
def test_each_kind_of_damage_to_a_cifar10_batch_is_one_line_naming_it(tmp_path, damage, fragment):
    write_cifar10(tmp_path)
    damage(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    assert_fetch_error(tmp_path, "cifar10", fragment, "data_batch_3")


def test_the_fixture_pickles_like_python_2(tmp_path):
    """The real batches are Python 2 pickles: 8-bit strings and numpy.core's reconstructor (what the loader meets)."""
    content = python2_pickle({b"data": np.zeros((1, 3072), np.uint8)})
    assert content.startswith(b"\x80\x02}") and b"U\x04data" in content and b"cnumpy.core.multiarray\n" in content
    assert b"X" not in content.split(b"data")[0]  # no BINUNICODE: nothing Python 2's cPickle would not write


# --- PTB -----------------------------------------------------------------------------------------

def test_ptb_ids_follow_the_reference_reader(tmp_path):
    write_ptb(tmp_path)
    data = load(tmp_path, "ptb")
    words = [word for line in PTB_TEXT["train"] for word in [*line, "<eos>"]]
    # by descending count, ties in code-point order: <eos> and the (3 each), cat (2), then the rest alphabetically
    order = ["<eos>", "the", "cat", "<unk>", "a", "dog", "is", "mat", "on", "ran", "sat"]
    assert data.description["vocabulary_size"] == len(order) == data.num_classes
    assert data.x_train.tolist() == [order.index(word) for word in words]
    assert data.x_valid.tolist() == [order.index(word) for line in PTB_TEXT["valid"] for word in [*line, "<eos>"]]
    assert data.x_train.dtype == torch.long


def test_ptb_words_are_split_as_the_reader_splits_them(tmp_path):
    # tensorflow/models tutorials/rnn/ptb/reader_test.py's own text: lines without a trailing space glue <eos>
    path = tmp_path / "ptb.train.txt"
    path.write_text("\n".join([" hello there i am", " rain as day", " want some cheesy puffs ?"]))
    assert ptb.read_words(path) == ["hello", "there", "i", "am<eos>", "rain", "as", "day<eos>", "want", "some",
                                    "cheesy", "puffs", "?"]


def test_ptb_drops_words_outside_the_training_vocabulary(tmp_path):
    write_ptb(tmp_path, {**PTB_TEXT, "test": [["the", "zebra", "sat"]]})
    data = load(tmp_path, "ptb")
    assert len(data.x_test) == 3 and data.description["dropped_out_of_vocabulary"]["test"] == 1


def test_batchify_gives_the_windows_of_the_readers_own_test():
    # tensorflow/models tutorials/rnn/ptb/reader_test.py testPtbProducer: batch_size 3, num_steps 2
    x, y = ptb.batchify(torch.tensor([4, 3, 2, 1, 0, 5, 6, 1, 1, 1, 1, 0, 3, 4, 1]), batch_size=3, num_steps=2)
    assert x.tolist() == [[[4, 3], [5, 6], [1, 0]], [[2, 1], [1, 1], [3, 4]]]
    assert y.tolist() == [[[3, 2], [6, 1], [0, 3]], [[1, 0], [1, 1], [4, 1]]]
    with pytest.raises(ValueError, match="cannot make a window"):
        ptb.batchify(torch.arange(5), batch_size=3, num_steps=2)


def test_ptb_ids_are_refused_by_a_model_of_real_valued_features(tmp_path):
    write_ptb(tmp_path)
    with pytest.raises(ConfigError, match="dataset ptb holds word ids, which model logistic cannot take"):
        run_in_process(["paper=mnist1d_logistic", "data.name=ptb", f"data.root={tmp_path}", "model.output_size=11",
                        "train.batch_size=4", "train.steps=1", "seeds=1", "logger=none"], tmp_path / "run")


def test_zarembas_layout_spreads_the_leftover_ids_between_the_rows():
    # 16 ids in 3 rows of 5: data.lua's `replicate` starts rows at round(0), round(16/3) = 5, round(32/3) = 11;
    # the TensorFlow reader at 0, 5, 10 and drops the last id
    ids = torch.arange(16)
    x, y = ptb.batchify(ids, batch_size=3, num_steps=2, layout="zaremba")
    assert x[:, 2].tolist() == [[11, 12], [13, 14]] and y[:, 2].tolist() == [[12, 13], [14, 15]]
    assert x[:, :2].tolist() == ptb.batchify(ids, batch_size=3, num_steps=2)[0][:, :2].tolist()
    assert ptb.batchify(ids, batch_size=3, num_steps=2)[0][:, 2].tolist() == [[10, 11], [12, 13]]


def test_ptb_damage_is_one_line(tmp_path):
    write_ptb(tmp_path)
    (tmp_path / "ptb.valid.txt").write_bytes(b"\xff\xfe not utf-8")
    assert_fetch_error(tmp_path, "ptb", "ptb.valid.txt", "not PTB text")
    (tmp_path / "ptb.valid.txt").unlink()
    assert_fetch_error(tmp_path, "ptb", "ptb.valid.txt not found")


# --- download ------------------------------------------------------------------------------------

def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_download_verifies_the_md5_and_leaves_nothing_half_written(tmp_path):
    served = tmp_path / "served" / "file.bin"
    served.parent.mkdir()
    served.write_bytes(b"official bytes")
    root = tmp_path / "root"
    root.mkdir()
    wrong = Download(urls=[served.as_uri()], md5="0" * 32, path="sub/file.bin")
    with pytest.raises(DatasetError, match=r"md5 .* expected 0{32}\); nothing was replaced"):
        download([wrong], root)
    assert list((root / "sub").iterdir()) == []  # no temporary left, no unverified file under the final name
    # the first mirror fails, the second serves the file
    good = Download(urls=[(tmp_path / "absent.bin").as_uri(), served.as_uri()], md5=md5(served), path="sub/file.bin")
    download([good], root)
    assert (root / "sub" / "file.bin").read_bytes() == b"official bytes"
    assert [path.name for path in (root / "sub").iterdir()] == ["file.bin"]


def test_download_true_fetches_a_damaged_mnist_and_reads_it(tmp_path, monkeypatch):
    served = tmp_path / "served"
    written = write_mnist(served, gz=True, seed=3)
    raw = served / "MNIST" / "raw"
    served_copies = [Download(urls=[path.as_uri()], md5=md5(path), path=f"MNIST/raw/{path.name}")
                     for path in sorted(raw.iterdir())]
    monkeypatch.setattr(mnist, "DOWNLOADS", served_copies)
    root = tmp_path / "root"
    write_mnist(root, gz=False, seed=4)
    (root / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"damaged")
    data = load(root, "mnist", download=True)
    assert data.y_train.tolist() == written["train"][1].tolist()


def test_download_true_fetches_and_extracts_the_cifar10_archive(tmp_path, monkeypatch):
    source = tmp_path / "source"
    written = write_cifar10(source)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    official = cifar10.DOWNLOADS[0]
    monkeypatch.setattr(cifar10, "DOWNLOADS", [Download(urls=[archive.as_uri()], md5=md5(archive), path=official.path,
                                                        extract=official.extract)])
    root = tmp_path / "root"
    root.mkdir()
    data = load(root, "cifar10", download=True)
    assert data.y_train.tolist() == written["train"][1]
    assert sorted(path.name for path in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]



# --- the command line ----------------------------------------------------------------------------

def test_python_m_replicate_trains_on_mnist_files_end_to_end(tmp_path):
    write_mnist(tmp_path / "data", n_train=40, n_test=20, gz=True)
    result = run_command(["replicate", "paper=mnist1d_logistic", "data.name=mnist", f"data.root={tmp_path / 'data'}",
                          "data.flatten=true", "model.input_size=784", "train.batch_size=10", "train.steps=2",
                          "seeds=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", "runtime.progress=false"])
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"]["n_train"] == 40 and report["data"]["input_shape"] == [784]
    assert report["steps"] == 2 and len(report["seeds"]) == 1


def test_a_missing_dataset_is_one_line_with_the_command_that_fetches_it(tmp_path):
    result = run_command(["replicate", "paper=mnist1d_logistic", "data.name=mnist", f"data.root={tmp_path}",
                          "logger=none", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: MNIST file train-images-idx3-ubyte (or train-images-idx3-ubyte.gz) not found in "
        f"{tmp_path.resolve() / 'MNIST' / 'raw'}; fetch it with: python -m replicate paper=mnist1d_logistic "
        f"data.root={tmp_path.resolve()} data.download=true"]


def test_data_download_changes_no_result_and_is_no_deviation():
    from replicate.replication import overridden_setup
    from replicate.config import compose
    from replicate.identity import fingerprint

    execution = {"device": "cpu", "threads": 1}
    base, fetching = compose(["paper=mnist1d_logistic"]), compose(["paper=mnist1d_logistic", "data.download=true"])
    assert fingerprint(base, execution) == fingerprint(fetching, execution)
    assert overridden_setup(["data.download=true"]) == [] and overridden_setup(["data.holdout=5"]) != []


def test_an_archive_member_that_is_a_link_is_not_extracted(tmp_path):
    archive = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("folder/data")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    root = tmp_path / "root"
    root.mkdir()
    item = Download(urls=[archive.as_uri()], md5=md5(archive), path="hostile.tar.gz", extract=["folder/data"])
    with pytest.raises(DatasetError, match="lacks folder/data"):
        download([item], root)
    assert sorted(path.name for path in root.iterdir()) == ["hostile.tar.gz"]  # no link, no staging folder


def test_a_data_root_that_does_not_exist_yet_is_refused_unless_the_download_creates_it(tmp_path):
    from replicate.config import compose
    from replicate.config_checks import check_config

    absent = tmp_path / "not-yet"
    with pytest.raises(ConfigError, match="is not a directory"):
        check_config(compose(["paper=keras_mnist_mlp", f"data.root={absent}"]))
    check_config(compose(["paper=keras_mnist_mlp", f"data.root={absent}", "data.download=true"]))
