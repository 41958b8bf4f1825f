"""What a run sees of its prepared data: the images of some classes only (`data.classes`), and its
validation and test images shifted by one affine map (`data.shift_scale`, `data.shift_offset`), as
a changed camera or lighting would shift them. The prepared copy in the cache stays as it is."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def run_view(arrays: dict[str, np.ndarray], data: dict) -> dict[str, np.ndarray]:
    """The splits of `arrays` (X_train, y_train, ...) as the run's data section says: with
    `classes`, each split keeps the images of those classes in their order (labels unchanged, so a
    10-way net stays 10-way; ValueError when no training or validation image is left); with a
    shift, X_val and X_test become scale * X + offset in the preprocessed units the net sees (the
    training images unchanged). No key: the arrays themselves."""
    view = dict(arrays)
    classes = data.get("classes")
    if classes is not None:
        for split in SPLITS:
            keep = np.isin(view[f"y_{split}"], classes)
            if split != "test" and not keep.any():  # nothing to train on, or to check
                raise ValueError(
                    f"data.classes {classes}: none of the {len(keep)} {split} images is of these classes; "
                    f"raise data.num_{split} or choose other classes"
                )
            view[f"X_{split}"], view[f"y_{split}"] = view[f"X_{split}"][keep], view[f"y_{split}"][keep]
    scale, offset = data.get("shift_scale", 1.0), data.get("shift_offset", 0.0)
    if (scale, offset) != (1.0, 0.0):
        for split in ("val", "test"):
            X = view[f"X_{split}"]
            view[f"X_{split}"] = X * X.dtype.type(scale) + X.dtype.type(offset)
    return view
