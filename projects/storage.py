"""Where the results a person fetches are kept: storage every machine can reach.

Two kinds of files:

- **Work files** — scene clips (checkpoints), an engine's work folder, the
  video while ffmpeg joins it — stay on the worker's own disk under
  `MEDIA_ROOT`: ffmpeg needs files, and they are that worker's business.
- **Results** — the finished video and the scene previews — go through
  Django's storage API (`STORAGES["default"]`), named as before
  (`videos/<project>/<name>.mp4`, `projects/<project>/previews/<set>/scene-N.webp`).
  By default that is the `MEDIA_ROOT` folder itself (`FileSystemStorage`, one
  machine); with `MEDIA_STORAGE=s3` it is a bucket of an S3-compatible service
  that every web process and worker reaches (django-storages' `S3Storage`).

A result is made in a file, then published (`publishing`). On a storage that
is this machine's own folder the file is made where the storage keeps it and
publishing is nothing: the local default behaves exactly as it always did. On
any other storage it is made in the worker's work folder, uploaded once whole,
and removed, so a half-made result never reaches the storage.

Reading: a local file is served by the web process with Range support; a
stored object elsewhere is answered with a redirect to a short-lived signed
address at the storage (`signed_url`), which serves Range requests itself and
keeps web processes free. (django-storages' `S3File` would download the whole
object to memory or a temporary file before the first byte: never stream a
video through it.)
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.utils.http import content_disposition_header

from projects.engines.base import TransientEngineError

logger = logging.getLogger(__name__)


class StorageUnavailable(TransientEngineError):
    """A result could not be stored; the attempt is retried (its clips stay as checkpoints)."""

    code = "storage_unavailable"


def media() -> Storage:
    """The storage of results (`STORAGES["default"]`)."""
    return storages["default"]


def local_path(name: str) -> Path | None:
    """Where a result lives on this machine's disk, or None when the storage is elsewhere."""
    try:
        return Path(media().path(name))
    except NotImplementedError:
        return None


@contextmanager
def publishing(name: str, scratch: Path, what: str) -> Iterator[Path]:
    """The file to write the result `name` into; stored under that name when the block ends.

    On a local storage that file is the stored one. Elsewhere it is a file
    under `scratch` (the worker's disk), uploaded and removed. If the block
    raises, the file is removed and nothing is stored. `what` names the
    result for the person, should the storage refuse it.
    """
    stored = local_path(name)
    path = stored if stored is not None else scratch / posixpath.basename(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield path
        if stored is None:
            _upload(path, name, what)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if stored is None:
        path.unlink(missing_ok=True)


def _upload(path: Path, name: str, what: str) -> None:
    try:
        with path.open("rb") as handle:
            saved = media().save(name, File(handle, name=posixpath.basename(name)))
    except Exception as error:
        # The storage's own words may name hosts and buckets: they go to the
        # worker's log; the person reads a sentence, and the attempt is tried again.
        logger.exception("Could not store %s", name)
        raise StorageUnavailable(
            f"The media storage did not take {what} ({_reason(error)}); "
            "check MEDIA_STORAGE and the AWS_* settings"
        ) from error
    if saved != name:
        delete(saved)
        raise StorageUnavailable(f"The media storage stored {what} under another name")


def _reason(error: Exception) -> str:
    """An S3 error's code (`NoSuchBucket`, `AccessDenied`), else the kind of error."""
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) if code else type(error).__name__


def listdir(folder: str) -> tuple[list[str], list[str]]:
    """The folders and files directly in `folder`; none if it does not exist.

    A storage that cannot be read is StorageUnavailable: a job that starts by
    tidying its results fails fast (and is retried) rather than after its work.
    """
    try:
        return media().listdir(folder)
    except FileNotFoundError:
        return [], []
    except Exception as error:
        logger.exception("Could not list %s", folder)
        raise StorageUnavailable(
            f"The media storage could not be read ({_reason(error)}); "
            "check MEDIA_STORAGE and the AWS_* settings"
        ) from error


# Removing is tidying up: a result left behind by a storage that fails at that
# moment is logged and removed by the project's next job (`_remove_unsaved_*`
# in projects/pipeline.py), never a reason to fail a job whose result is saved.


def delete(name: str) -> None:
    """Remove one result; a result already gone is no error."""
    if not name:
        return
    try:
        media().delete(name)
    except Exception:
        logger.exception("Could not remove %s from the media storage; left behind", name)


def remove_folder(folder: str) -> None:
    """Remove a folder of results and everything in it."""
    path = local_path(folder)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        folders, files = listdir(folder)
    except StorageUnavailable:
        logger.warning("Could not remove %s from the media storage; left behind", folder)
        return
    for file in files:
        delete(posixpath.join(folder, file))
    for inner in folders:
        remove_folder(posixpath.join(folder, inner))


def signed_url(name: str, content_type: str, filename: str) -> str:
    """A short-lived address at the storage that serves `name` (with Range) to whoever holds it.

    The storage is asked to answer with our content type and file name, as
    the web process itself would.
    """
    parameters = {
        "ResponseContentType": content_type,
        "ResponseContentDisposition": content_disposition_header(False, filename),
    }
    return media().url(name, parameters=parameters)
