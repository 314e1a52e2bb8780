"""The host's gallery of enrolled people for ``python -m firmware.run enroll / identify``.

A JSON file (default ``gallery.json``)::

    {"format": "seesaw-gallery", "version": 1,
     "artifact": "<sha256 of the artifact's model.npz>",
     "people": {"NAME": [[512 integers], ...], ...}}

Each person keeps every enrolled embedding as the engine returned it (signed 16-bit integers);
a probe scores against a person by the highest cosine over that person's embeddings.
``artifact`` ties the embeddings to the quantized model that computed them: a probe from
another model is refused, since their cosines would mean nothing.

Safety: :meth:`Gallery.save` writes a temporary file in the same folder, flushes it to disk and
renames it over the old one, so an interrupted write leaves the previous gallery whole. A file
that does not parse as a gallery raises :class:`GalleryError` naming it and what is wrong; it
is never replaced silently (``enroll`` refuses to write over it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quant import files
from quant.cli import UserError

from .driver import cosine

FORMAT, VERSION = "seesaw-gallery", 1


class GalleryError(UserError, ValueError):
    """A gallery file that cannot be used, or an unknown name; the message names it."""


@dataclass
class Gallery:
    path: Path
    artifact: str | None = None
    people: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path, must_exist=False) -> "Gallery":
        """The gallery at ``path``; an empty one if the file does not exist (unless
        ``must_exist``). A corrupt file raises :class:`GalleryError`."""
        path = Path(path)
        if not path.exists():
            if must_exist:
                raise GalleryError(f"{path}: no gallery yet (enroll someone first: "
                                   f"`python -m firmware.run enroll NAME photo.jpg`)")
            return cls(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GalleryError(f"{path}: corrupt gallery, not readable JSON ({e}); left as it "
                               f"is: move it away or pass another --gallery") from None
        where = cls._check(doc)
        if where:
            raise GalleryError(f"{path}: corrupt gallery ({where}); left as it is: move it "
                               f"away or pass another --gallery")
        people = {name: np.array(embs, dtype=np.int64) for name, embs in doc["people"].items()}
        return cls(path, doc["artifact"], people)

    @staticmethod
    def _check(doc) -> str | None:
        """What is wrong with a parsed gallery document, or None."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return f"no \"format\": \"{FORMAT}\" field"
        if doc.get("version") != VERSION:
            return f"version {doc.get('version')!r}, this tool reads {VERSION}"
        if not isinstance(doc.get("artifact"), (str, type(None))):
            return "\"artifact\" is not a string"
        people = doc.get("people")
        if not isinstance(people, dict):
            return "\"people\" is not an object"
        length = None
        for name, embs in people.items():
            if not isinstance(embs, list) or not embs:
                return f"person {name!r} has no embedding list"
            for e in embs:
                if (not isinstance(e, list) or not e or
                        not all(isinstance(v, int) and -32768 <= v <= 32767 for v in e)):
                    return f"person {name!r}: an embedding is not a list of 16-bit integers"
                if length not in (None, len(e)):
                    return f"person {name!r}: embedding of {len(e)} values, others have {length}"
                length = len(e)
        return None

    def check_artifact(self, artifact: str | None):
        """Refuse embeddings of another model than the gallery's."""
        if self.artifact and artifact and self.artifact != artifact and self.people:
            raise GalleryError(f"{self.path}: enrolled with another model (artifact "
                               f"{self.artifact[:12]}, this one {artifact[:12]}); use "
                               f"another --gallery")

    def enroll(self, name: str, embeddings, artifact: str | None):
        if not name or not name.strip():
            raise GalleryError(f"{self.path}: a person's name must not be empty")
        self.check_artifact(artifact)
        self.artifact = self.artifact or artifact
        new = np.asarray(embeddings, dtype=np.int64).reshape(len(embeddings), -1)
        old = self.people.get(name)
        self.people[name] = new if old is None else np.concatenate([old, new])

    def remove(self, name: str):
        self.person(name)
        del self.people[name]

    def person(self, name: str) -> np.ndarray:
        if name not in self.people:
            known = ", ".join(sorted(self.people)) or "nobody"
            raise GalleryError(f"{self.path}: unknown name {name!r} (enrolled: {known})")
        return self.people[name]

    def scores(self, embedding, names=None) -> list[tuple[str, float]]:
        """(name, best cosine over that person's embeddings), best first."""
        names = list(self.people) if names is None else names
        out = [(n, max(cosine(embedding, e) for e in self.person(n))) for n in names]
        return sorted(out, key=lambda t: -t[1])

    def save(self):
        """Atomically: a temporary file beside the gallery, flushed, renamed over it."""
        doc = {"format": FORMAT, "version": VERSION, "artifact": self.artifact,
               "people": {n: e.tolist() for n, e in self.people.items()}}
        files.write_text(self.path, json.dumps(doc) + "\n")
