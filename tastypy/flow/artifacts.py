"""Artifacts: what a task makes, whose existence means the task is done.

An artifact is named by a string in the flow file (after its parameters
are put in). A plain path, or a ``file://`` URL, is a file on this machine;
``http://`` and ``https://`` URLs exist when a ``HEAD`` request answers
2xx. Other kinds (an object in a bucket, a table in a database) plug in
with :func:`register_artifact`, so their client libraries are imported
only by the flows that use them. datamake hard-wired MySQL instead.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from typing import Final

from tastypy.errors import FlowError

__all__ = ["Artifact", "LocalArtifact", "UrlArtifact", "artifact_for", "register_artifact"]

#: Seconds an ``http(s)`` artifact's HEAD request may take.
URL_TIMEOUT: Final = 30.0


class Artifact:
    """The interface of an artifact: ``uri``, :meth:`exists`, :meth:`delete`.

    Subclass it for another kind and register the subclass for its URL
    scheme with :func:`register_artifact`. Instances are sent to the
    workers that run tasks (to check that a task made its artifact), so
    they must be picklable: a class defined at module level, holding the
    URI and what it parsed from it, not an open client.
    """

    def __init__(self, uri: str):
        self.uri = uri

    def exists(self) -> bool:
        """Whether the artifact is there (then its task does not run)."""
        raise NotImplementedError(f"{type(self).__name__}.exists")

    def delete(self) -> None:
        """Remove the artifact (``"cleanup": true``, ``--delete-artifacts``)."""
        raise FlowError(f"cannot delete {self.uri}: {type(self).__name__} does not support it")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.uri == self.uri  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.uri))


class LocalArtifact(Artifact):
    """A file or directory; a relative path is taken from the directory
    the flow runs in (``base``)."""

    def __init__(self, uri: str, base: str = "."):
        super().__init__(uri)
        path = urllib.parse.urlsplit(uri).path if uri.startswith("file://") else uri
        self.path = os.path.join(base, os.path.expanduser(path))

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def delete(self) -> None:
        try:
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                os.rmdir(self.path)
            else:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FlowError(f"cannot delete the artifact {self.path}: {exc.strerror}") from None


class UrlArtifact(Artifact):
    """A URL that exists when a ``HEAD`` request answers 2xx (redirects
    followed), and does not when it answers 404 or 410. Any other answer,
    or no answer, is an error: the flow cannot tell."""

    def exists(self) -> bool:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.uri, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=URL_TIMEOUT) as response:
                return 200 <= response.status < 300
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return False
            raise FlowError(f"cannot tell whether {self.uri} exists: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FlowError(f"cannot tell whether {self.uri} exists: {reason}") from None


#: Artifact kinds by URL scheme (lower case).
_KINDS: dict[str, Callable[[str], Artifact]] = {
    "http": UrlArtifact,
    "https": UrlArtifact,
}


def register_artifact(scheme: str, kind: Callable[[str], Artifact]) -> None:
    """Use ``kind(uri)`` for the artifacts whose URI starts with ``scheme://``.

    For example, objects in an S3 bucket, with boto3 imported only when a
    flow checks one::

        class S3Artifact(Artifact):
            def exists(self):
                import boto3, botocore.exceptions
                bucket, _, key = self.uri[len("s3://"):].partition("/")
                try:
                    boto3.client("s3").head_object(Bucket=bucket, Key=key)
                except botocore.exceptions.ClientError as exc:
                    if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                        return False
                    raise
                return True

        register_artifact("s3", S3Artifact)
    """
    if not isinstance(scheme, str) or not scheme.isidentifier() or len(scheme) < 2:
        raise FlowError(f"an artifact scheme is a word like 's3' or 'gs', got {scheme!r}")
    if not callable(kind):
        raise FlowError(
            f"register_artifact({scheme!r}, ...) needs a class or function, got {kind!r}"
        )
    _KINDS[scheme.lower()] = kind


def artifact_for(uri: str, base: str) -> Artifact:
    """The artifact named ``uri``: local unless it has a registered scheme."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if len(scheme) <= 1 or scheme == "file":  # no scheme, or a Windows drive letter
        return LocalArtifact(uri, base)
    kind = _KINDS.get(scheme)
    if kind is None:
        raise FlowError(
            f"no artifact kind is registered for {scheme}:// (in {uri!r}); register one with "
            f"tastypy.flow.register_artifact({scheme!r}, ...) (see docs/flows.md), or name a "
            "local path"
        )
    return kind(uri)
