"""The scene folder: what ``tracefield infer`` writes for one clip, and where everyone reads it.

One scene is one folder::

    <scene>/field.safetensors   the compact field (ours)
    <scene>/output.pt           the public release's layout (optional)
    <scene>/images/NNN.png      the frames the network saw
    <scene>/masks/NNN.png       automatic foreground masks; NNN_user.png: a user's own
    <scene>/preview.png         a glance at the result
    <scene>/exports/            what the viewer exports
    <scene>/recordings/         what the viewer records

Infer writes through this object, and the field reader, the CLI, the viewer and the export
read through it, so no path or scene name is spelled out twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracefield.errors import TracefieldError

FIELD_FILE = "field.safetensors"
RELEASE_FILE = "output.pt"
PREVIEW_FILE = "preview.png"
USER_MASK_SUFFIX = "_user.png"  # masks/NNN_user.png: a user's own foreground mask of frame NNN


@dataclass(frozen=True)
class SceneFolder:
    """The paths of one scene folder; ``name`` is the scene's name (the folder's)."""

    root: Path

    @classmethod
    def of(cls, path: str | Path) -> "SceneFolder":
        """The scene folder of a folder, or of a field file (``field.safetensors`` / ``output.pt``) inside one."""
        path = Path(path)
        return cls(path if path.is_dir() else path.parent)

    @property
    def name(self) -> str:
        return self.root.resolve().name or "scene"

    @property
    def field_file(self) -> Path:
        return self.root / FIELD_FILE

    @property
    def release_file(self) -> Path:
        return self.root / RELEASE_FILE

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def preview(self) -> Path:
        return self.root / PREVIEW_FILE

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    def image(self, index: int) -> Path:
        return self.images / f"{index:03d}.png"

    def mask(self, index: int) -> Path:
        return self.masks / f"{index:03d}.png"

    def user_mask(self, index: int) -> Path:
        return self.masks / f"{index:03d}{USER_MASK_SUFFIX}"

    def user_masks(self) -> list[Path]:
        return sorted(self.masks.glob(f"*{USER_MASK_SUFFIX}")) if self.masks.is_dir() else []

    @staticmethod
    def field_source(path: str | Path) -> Path:
        """The field file to read for ``path`` (a scene folder or a file): ours first, then the release's."""
        path = Path(path)
        if path.is_dir():
            folder = SceneFolder(path)
            found = next((c for c in (folder.field_file, folder.release_file) if c.is_file()), None)
            if found is None:
                raise TracefieldError(
                    f"{path}: not a scene folder (expected {FIELD_FILE} or {RELEASE_FILE} inside); "
                    f"make one with `tracefield infer VIDEO_OR_FRAMES -o {path.parent}`"
                )
            return found
        if not path.is_file():
            raise TracefieldError(f"{path}: not found; pass a scene folder from `tracefield infer`, a {FIELD_FILE} or an {RELEASE_FILE}")
        return path
