"""COCO keypoint files, read and checked: an annotation file and a results list.

Every entry is checked when a file is read (`load_annotations`, `load_results`), so a bad file
is one line naming it and its first bad entry (`AnnotationError`), never a traceback from deep in
the evaluator. Also the few questions the evaluate command asks of an annotation file (its
number of joints, the subset of some images, the predictions of those images).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import AnnotationError


def read_json(source: Any, what: str) -> tuple[Any, str]:
    """Parse a JSON file (or pass an in-memory object through) and name it for messages."""
    if not isinstance(source, (str, Path)):
        return source, f"<{what}>"
    name = str(source)
    try:
        with open(source, encoding="utf-8") as handle:
            return json.load(handle), name
    except OSError as err:
        raise AnnotationError(f"{name}: cannot read {what} file ({err.strerror or err})") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{name}: {what} file is not valid JSON ({err})") from err


def load_annotations(path: str | Path) -> dict:
    """A COCO annotation file as a dict, every entry checked (`check_annotations`).

    The CLI reads the file once with this (to pick images and count joints) and hands the dict
    to `evaluate_keypoints`.
    """
    data, name = read_json(path, "annotations")
    check_annotations(data, name)
    return data


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_NUMBER_TYPES = frozenset((int, float))


def _check_numbers(entry: dict, key: str, where: str, *, length: int | None = None, multiple: int | None = None) -> None:
    """A list of numbers (exact types, so bools and strings fail; cheap enough for 100k results:
    NaN and infinity in keypoints are caught later, in bulk, by numpy)."""
    values = entry[key]
    if not isinstance(values, list) or not set(map(type, values)) <= _NUMBER_TYPES:
        raise AnnotationError(f"{where}: '{key}' must be a list of numbers, got {_show(values)}")
    if length is not None and not all(map(math.isfinite, values)):
        raise AnnotationError(f"{where}: '{key}' must be finite numbers, got {_show(values)}")
    if length is not None and len(values) != length:
        raise AnnotationError(f"{where}: '{key}' must have {length} numbers, got {len(values)}")
    if multiple is not None and len(values) % multiple:
        raise AnnotationError(f"{where}: '{key}' must have a multiple of {multiple} numbers, got {len(values)}")


def check_annotations(data: Any, name: str) -> None:
    """AnnotationError naming the file and the first bad entry of a COCO keypoint dataset.

    'images', 'annotations' and 'categories' must be lists of objects; every id ('id',
    'image_id', 'category_id') an integer; 'file_name' a string; 'keypoints' a list of numbers
    whose length is a multiple of 3; 'bbox' four numbers; 'area' a number.
    """
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"{name}: not a COCO annotation file (needs 'images' and 'annotations')")
    for section in ("images", "annotations", "categories"):
        if section in data and not isinstance(data[section], list):
            raise AnnotationError(f"{name}: '{section}' must be a list, got {_show(data[section])}")
    for i, image in enumerate(data["images"]):
        where = f"{name}: images[{i}]"
        if not isinstance(image, dict):
            raise AnnotationError(f"{where}: must be an object, got {_show(image)}")
        if not _is_int(image.get("id")):
            raise AnnotationError(f"{where}: 'id' must be an integer, got {_show(image.get('id'))}")
        if "file_name" in image and not (isinstance(image["file_name"], str) and image["file_name"]):
            raise AnnotationError(f"{where}: 'file_name' must be a non-empty string, got {_show(image['file_name'])}")
    for i, cat in enumerate(data.get("categories", [])):
        where = f"{name}: categories[{i}]"
        if not isinstance(cat, dict):
            raise AnnotationError(f"{where}: must be an object, got {_show(cat)}")
        if not _is_int(cat.get("id")):
            raise AnnotationError(f"{where}: 'id' must be an integer, got {_show(cat.get('id'))}")
        if "keypoints" in cat and not (isinstance(cat["keypoints"], list) and all(isinstance(k, str) for k in cat["keypoints"])):
            raise AnnotationError(f"{where}: 'keypoints' must be a list of joint names, got {_show(cat['keypoints'])}")
    for i, ann in enumerate(data["annotations"]):
        where = f"{name}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise AnnotationError(f"{where}: must be an object, got {_show(ann)}")
        for key in ("id", "image_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise AnnotationError(f"{where}: '{key}' must be an integer, got {_show(ann.get(key))}")
        if "keypoints" in ann:
            _check_numbers(ann, "keypoints", where, multiple=3)
        if "bbox" in ann:
            _check_numbers(ann, "bbox", where, length=4)
        if "area" in ann and not _is_number(ann["area"]):
            raise AnnotationError(f"{where}: 'area' must be a finite number, got {_show(ann['area'])}")


def check_results(results: Any, name: str) -> None:
    """AnnotationError naming the file and the first bad entry of a COCO keypoint results list:
    objects with integer 'image_id' and 'category_id', 'keypoints' a list of numbers (length a
    multiple of 3), a finite number 'score', and 'bbox' (if any) four numbers.

    A bulk pass over the fields decides (a few ms for 10,000 results); only when it fails are the
    entries walked one by one to name the first bad one. Keypoint values are left to the bulk
    numpy parse of `cocoeval.detections`, which refuses non-numbers naming the file.
    """
    if not isinstance(results, list):
        raise AnnotationError(f"{name}: results must be a JSON list of detections")
    if _results_look_valid(results):
        return
    for i, r in enumerate(results):
        _check_result(r, f"{name}: result [{i}]")


def _results_look_valid(results: list) -> bool:
    try:
        return (
            {type(r) for r in results} <= {dict}
            and {type(r.get("image_id")) for r in results} <= {int}
            and {type(r.get("category_id")) for r in results} <= {int}
            and {type(r.get("score")) for r in results} <= _NUMBER_TYPES
            and all(map(math.isfinite, (r["score"] for r in results)))
            and {type(r.get("keypoints")) for r in results} <= {list}
            and not any(len(r["keypoints"]) % 3 for r in results)
            and {type(v) for r in results for v in r.get("bbox") or ()} <= _NUMBER_TYPES
            and all(len(r["bbox"]) == 4 for r in results if r.get("bbox"))
            and {type(r.get("bbox", [])) for r in results} <= {list}
        )  # keypoint values themselves: parsed in bulk by numpy in `_detections`
    except (TypeError, AttributeError):
        return False


def _check_result(r: Any, where: str) -> None:
    if not isinstance(r, dict):
        raise AnnotationError(f"{where}: must be an object, got {_show(r)}")
    for key in ("image_id", "category_id"):
        if not _is_int(r.get(key)):
            raise AnnotationError(f"{where}: '{key}' must be an integer, got {_show(r.get(key))}")
    if "keypoints" not in r:
        raise AnnotationError(f"{where}: no 'keypoints'")
    _check_numbers(r, "keypoints", where, multiple=3)
    if not _is_number(r.get("score")):
        raise AnnotationError(f"{where}: 'score' must be a finite number, got {_show(r.get('score'))}")
    if "bbox" in r and r["bbox"] != []:
        _check_numbers(r, "bbox", where, length=4)


def load_results(source: Any, name: str | None = None) -> tuple[list, str]:
    """A COCO results list (file or in-memory list) and its name, every entry checked."""
    results, default_name = read_json(source, "results")
    name = name or default_name
    check_results(results, name)
    return results, name




def annotation_num_joints(ann: dict, path: str | Path) -> int:
    """K of an annotation file: its categories' keypoint names, else its first annotation's."""
    for cat in ann.get("categories", []):
        if cat.get("keypoints"):
            return len(cat["keypoints"])
    for a in ann.get("annotations", []):
        if a.get("keypoints"):
            return len(a["keypoints"]) // 3
    raise AnnotationError(f"{path}: no keypoints in any category or annotation")


def subset_annotations(ann: dict, image_ids: set) -> dict:
    """The annotation file restricted to some images (and their annotations)."""
    subset = dict(ann)
    subset["images"] = [im for im in ann["images"] if im["id"] in image_ids]
    subset["annotations"] = [a for a in ann["annotations"] if a["image_id"] in image_ids]
    return subset


def predictions_of(results: list, name: str, ann: dict, subset: dict) -> list:
    """The predictions of a subset's images (the file may hold every image's): ids that are
    not in the annotation file at all are an error naming both files."""
    known = {im.get("id") for im in ann.get("images", []) if isinstance(im, dict)}
    wanted = {im["id"] for im in subset["images"]}
    kept = []
    for det in results:
        image_id = det.get("image_id") if isinstance(det, dict) else None
        try:
            hashable = hash(image_id) is not None
        except TypeError:
            hashable = False
        if not hashable or image_id not in known:
            raise AnnotationError(f"{name}: image_id {image_id!r} is not in the annotation file")
        if image_id in wanted:
            kept.append(det)
    return kept
