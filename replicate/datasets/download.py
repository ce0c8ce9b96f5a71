"""`data.download=true`: fetch a dataset's official files, verify their published md5 sums, and only
then put them in place, so a file under its final name is always a whole, verified copy.

Each file is downloaded by `torch.hub.download_url_to_file` (urllib; any scheme urllib opens,
file:// included) to a temporary name beside its destination, checked, and renamed over the
destination; an archive is then extracted into a temporary folder beside its final one and each
member renamed into place.

    download([Download(urls=[url], md5="...", path="MNIST/raw/train-images-idx3-ubyte.gz")], root)
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Download:
    urls: list[str]  # mirrors, tried in turn
    md5: str  # of the file as published
    path: str  # destination, relative to data.root
    extract: list[str] = field(default_factory=list)  # for a .tar.gz: the members to extract into data.root


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a published checksum to compare with, not a security check
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(downloads: list[Download], root: Path) -> None:
    for item in downloads:
        target = Path(root) / item.path
        if not (target.is_file() and md5_of(target) == item.md5):
            fetch_verified(item, target)
        if item.extract:
            extract(target, Path(root), item.extract)


def fetch_verified(item: Download, target: Path) -> None:
    from torch.hub import download_url_to_file

    from replicate.datasets import DatasetError

    target.parent.mkdir(parents=True, exist_ok=True)
    problems = []
    for url in item.urls:
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.download")
        try:
            print(f"downloading {url}", file=sys.stderr)
            download_url_to_file(url, str(temporary), progress=sys.stderr.isatty())
            found = md5_of(temporary)
            if found != item.md5:
                problems.append(f"{url} gave a file with md5 {found}, expected {item.md5}")
                continue
            os.replace(temporary, target)
            return
        except (OSError, ValueError) as error:  # urllib's URLError and HTTPError are OSErrors
            problems.append(f"{url}: {getattr(error, 'reason', None) or error}")
        finally:
            temporary.unlink(missing_ok=True)
    raise DatasetError(f"could not download {target.name} ({'; '.join(problems)}); nothing was replaced; "
                       f"check the network, or place the file at {target} yourself (docs/datasets.md)")


def extract(archive: Path, root: Path, members: list[str]) -> None:
    """Extract `members` of a .tar.gz into root through a temporary folder beside them; each file is renamed
    into place whole. Only regular files under the exact names asked for are extracted (no links, no
    paths of the archive's choosing), through tarfile's "data" filter where this Python has it (3.10.12+)."""
    from replicate.datasets import DatasetError

    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            wanted = [member for member in tar.getmembers() if member.name in members and member.isfile()]
            missing = sorted(set(members) - {member.name for member in wanted})
            if missing:
                raise DatasetError(f"{archive} lacks {', '.join(missing)}; delete it and download again")
            tar.extractall(staging, members=wanted, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        for name in members:
            destination = root / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, destination)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DatasetError(f"cannot extract {archive} ({error}); delete it and download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
