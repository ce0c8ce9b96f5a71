"""Read an offline wandb run (`run-<id>.wandb`) back, for tests: what was logged, not what we meant to log.

wandb >= 0.19 no longer ships a Python reader, so this follows the file format: a 7-byte header
(":W&B", magic 0xBEE1, version), then 32 KiB blocks of records in the leveldb log layout
(checksum u32, length u16, type u8 ∈ FULL/FIRST/MIDDLE/LAST, data), each record a protobuf
`wandb.proto.wandb_internal_pb2.Record`.
"""
import json
import struct
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, "not a wandb run file"
    position, pending = 7, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:
            position += left_in_block  # zero trailer
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        if kind == 0 and length == 0:
            position += left_in_block
            continue
        payload = data[position + HEADER:position + HEADER + length]
        assert zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF == checksum, "corrupt record"
        position += HEADER + length
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        else:
            pending += payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def summarize_run(path) -> dict:
    """run (group, job_type, tags, id), merged config and summary, and history rows of one offline run."""
    result = {"config": {}, "summary": {}, "history": []}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            result.update(id=run.run_id, group=run.run_group, job_type=run.job_type, tags=list(run.tags),
                          name=run.display_name)
            for item in run.config.update:
                result["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                result["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                result["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            result["history"].append({_key(item): json.loads(item.value_json) for item in record.history.item})
    return result
