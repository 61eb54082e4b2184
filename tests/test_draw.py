"""draw_poses against hand-computed OpenCV calls and a transliteration of the reference's loop."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from aepose_cli.config import DrawConfig
from aepose_cli.draw import TRACK_PALETTE, draw_poses, drawing_widths, line_width, track_colour
from aepose_cli.keypoints import AIC, COCO
from aepose_cli.types import Pose

from paths import SHARED, needs_shared  # noqa: E402

# The reference demo's widths (mmpose 0.29's bottom_up_img_demo.py): the default widths follow
# the picture instead (`drawing_widths`), so the pixel-exact comparisons name these.
REFERENCE = DrawConfig(radius=4, thickness=1)
GREEN = (0, 255, 0)
ORANGE_AS_STORED = (255, 128, 0)  # 'orange' in the dataset info; OpenCV reads it as BGR (blue)
BLUE_AS_STORED = (51, 153, 255)


def _synthetic_pose() -> Pose:
    """A COCO pose on a 120x100 image exercising every rule of the reference's drawing loop."""
    kpts = np.zeros((17, 3), np.float32)
    kpts[5] = (30.7, 40.2, 0.9)  # left shoulder
    kpts[6] = (80.0, 40.0, 0.29)  # right shoulder: below kpt_thr, neither joint nor links
    kpts[7] = (50.9, 60.99, 0.8)  # left elbow
    kpts[9] = (0.5, 70.0, 0.9)  # left wrist: int(x) == 0, so its circle is drawn, its link not
    kpts[11] = (30.0, 80.0, 0.3)  # left hip: exactly kpt_thr counts as confident
    kpts[12] = (119.5, 80.0, 0.9)  # right hip: int(x) == 119 < width, inside
    kpts[13] = (30.0, 100.2, 0.9)  # left knee: int(y) == 100 == height, link skipped
    return Pose(keypoints=kpts, score=0.7)


def test_draw_matches_hand_computed_opencv_calls():
    image = np.full((100, 120, 3), 17, np.uint8)
    original = image.copy()
    drawn = draw_poses(image, [_synthetic_pose()], COCO, REFERENCE)

    expected = original.copy()
    # Joints in joint order, int()-truncated, radius 4, filled.
    cv2.circle(expected, (30, 40), 4, GREEN, -1)  # 5
    cv2.circle(expected, (50, 60), 4, GREEN, -1)  # 7
    cv2.circle(expected, (0, 70), 4, GREEN, -1)  # 9
    cv2.circle(expected, (30, 80), 4, GREEN, -1)  # 11
    cv2.circle(expected, (119, 80), 4, ORANGE_AS_STORED, -1)  # 12
    cv2.circle(expected, (30, 100), 4, GREEN, -1)  # 13
    # Links in skeleton-table order: 13-11 (y == h) skipped, 11-12, 5-11 drawn, 6-12 and 5-6
    # (score) skipped, 5-7 drawn, 7-9 (x == 0) skipped.
    cv2.line(expected, (30, 80), (119, 80), BLUE_AS_STORED, thickness=1)
    cv2.line(expected, (30, 40), (30, 80), BLUE_AS_STORED, thickness=1)
    cv2.line(expected, (30, 40), (50, 60), GREEN, thickness=1)

    assert np.array_equal(drawn, expected)
    assert np.array_equal(image, original), "the input image must not be modified"
    # The stored 'orange' lands in the blue channel, as in the reference (pixel below the line).
    assert tuple(drawn[83, 119]) == ORANGE_AS_STORED


def test_kpt_thr_radius_and_thickness_are_honoured():
    image = np.zeros((100, 120, 3), np.uint8)
    cfg = DrawConfig(kpt_thr=0.85, radius=2, thickness=3)
    drawn = draw_poses(image, [_synthetic_pose()], COCO, cfg)

    expected = image.copy()
    for joint, xy in ((5, (30, 40)), (9, (0, 70)), (12, (119, 80)), (13, (30, 100))):
        colour = ORANGE_AS_STORED if joint == 12 else GREEN
        cv2.circle(expected, xy, 2, colour, -1)
    # Only 5 and 12 are confident and inside, but they share no link; no line at all.
    assert np.array_equal(drawn, expected)


def test_threshold_is_compared_in_float64_like_the_reference():
    # float32(0.7) is 0.69999998...: below 0.7, so neither joint nor link is drawn (NumPy 1.x
    # scalar comparison in the reference); a float32 comparison would draw them.
    kpts = np.zeros((17, 3), np.float32)
    kpts[5] = (30, 40, 0.7)
    kpts[7] = (50, 60, 0.9)
    image = np.zeros((100, 120, 3), np.uint8)
    drawn = draw_poses(image, [Pose(kpts, 1.0)], COCO, DrawConfig(kpt_thr=0.7, radius=4, thickness=1))
    expected = image.copy()
    cv2.circle(expected, (50, 60), 4, GREEN, -1)
    assert np.array_equal(drawn, expected)


def _reference_imshow_keypoints(img, pose_result, skeleton, kpt_score_thr, pose_kpt_color,
                                pose_link_color, radius, thickness):
    """mmpose 0.29 `imshow_keypoints` transliterated (show_keypoint_weight=False)."""
    img_h, img_w, _ = img.shape
    for kpts in pose_result:
        kpts = np.array(kpts, copy=False)
        for kid, kpt in enumerate(kpts):
            x_coord, y_coord, kpt_score = int(kpt[0]), int(kpt[1]), kpt[2]
            if kpt_score < kpt_score_thr:
                continue
            color = tuple(int(c) for c in pose_kpt_color[kid])
            cv2.circle(img, (int(x_coord), int(y_coord)), radius, color, -1)
        for sk_id, sk in enumerate(skeleton):
            pos1 = (int(kpts[sk[0], 0]), int(kpts[sk[0], 1]))
            pos2 = (int(kpts[sk[1], 0]), int(kpts[sk[1], 1]))
            if (pos1[0] <= 0 or pos1[0] >= img_w or pos1[1] <= 0 or pos1[1] >= img_h
                    or pos2[0] <= 0 or pos2[0] >= img_w or pos2[1] <= 0 or pos2[1] >= img_h
                    or kpts[sk[0], 2] < kpt_score_thr or kpts[sk[1], 2] < kpt_score_thr):
                continue
            color = tuple(int(c) for c in pose_link_color[sk_id])
            cv2.line(img, pos1, pos2, color, thickness=thickness)
    return img


@needs_shared
@pytest.mark.parametrize("case", ["bus", "000000196141"])
def test_golden_people_drawn_like_the_reference_on_a_real_image(case):
    golden = json.loads((SHARED / "golden/cases" / case / "a_s1_flip.json").read_text())
    image = cv2.imread(str(SHARED / golden["image"]), cv2.IMREAD_COLOR)
    poses = [
        Pose(keypoints=np.asarray(p["keypoints"], np.float32), score=p["score"])
        for p in golden["people"]
    ]
    assert len(poses) > 10
    # The golden checkpoint is untrained (scores below 0.25): lower the threshold so that about
    # half the joints count as confident and many links hit the bounds rules.
    drawn = draw_poses(image, poses, COCO, DrawConfig(kpt_thr=0.1, radius=4, thickness=1))
    expected = _reference_imshow_keypoints(
        image.copy(), [p.keypoints for p in poses], COCO.skeleton, 0.1, COCO.joint_colours,
        COCO.link_colours, radius=4, thickness=1,
    )
    assert not np.array_equal(drawn, image), "these random people must draw something"
    assert np.array_equal(drawn, expected)


def test_track_id_drawn_in_its_palette_colour_above_the_top_joint():
    image = np.zeros((100, 120, 3), np.uint8)
    pose = _synthetic_pose()
    plain = draw_poses(image, [pose], COCO, DrawConfig())
    tracked = draw_poses(image, [pose.with_track_id(3)], COCO, DrawConfig())
    switched_off = draw_poses(
        image, [pose.with_track_id(3)], COCO, DrawConfig(draw_track_ids=False)
    )

    assert np.array_equal(switched_off, plain)
    changed = np.argwhere(np.any(tracked != plain, axis=2))
    assert changed.size > 0
    # Text sits above the top-most confident joint (left shoulder at y=40).
    assert changed[:, 0].max() < 40
    # Anti-aliased text: every changed pixel is a shade of the track colour (on black).
    mean_colour = tracked[changed[:, 0], changed[:, 1]].astype(float).mean(axis=0)
    colour = np.array(track_colour(3), float)
    cosine = mean_colour @ colour / (np.linalg.norm(mean_colour) * np.linalg.norm(colour))
    assert cosine > 0.999


def test_track_colours_are_stable_and_distinct():
    assert track_colour(3) == track_colour(3 + len(TRACK_PALETTE))
    assert len(set(track_colour(i) for i in range(len(TRACK_PALETTE)))) == len(TRACK_PALETTE)


def test_other_keypoint_sets_and_joint_count_check():
    image = np.zeros((50, 50, 3), np.uint8)
    kpts = np.zeros((14, 3), np.float32)
    kpts[0] = (10, 10, 1.0)
    kpts[1] = (20, 30, 1.0)
    drawn = draw_poses(image, [Pose(kpts, 1.0)], AIC, REFERENCE)
    expected = image.copy()
    cv2.circle(expected, (10, 10), 4, AIC.joint_colours[0], -1)
    cv2.circle(expected, (20, 30), 4, AIC.joint_colours[1], -1)
    cv2.line(expected, (20, 30), (10, 10), AIC.link_colours[1], thickness=1)  # link 1-0
    assert np.array_equal(drawn, expected)

    with pytest.raises(ValueError, match="17 joints"):
        draw_poses(image, [Pose(np.zeros((17, 3), np.float32), 1.0)], AIC, DrawConfig())


# -- widths that follow the picture ----------------------------------------------------------


def _opencv_line_pixels(thickness: int) -> int:
    """How many pixels across OpenCV draws a horizontal line of `thickness` (what the reference
    and Ultralytics pass it too): 1 -> 1, then 2 -> 3, 3 and 4 -> 5, 5 and 6 -> 7."""
    return 1 if thickness == 1 else 2 * ((thickness + 1) // 2) + 1


def _measured_widths(width: int, height: int, cfg: DrawConfig) -> tuple[int, int, int]:
    """(line thickness, joint diameter, track-id text height) in pixels, measured on what
    `draw_poses` drew for a synthetic pose on a black `width` x `height` picture: a horizontal
    left-shoulder-to-right-shoulder line across the middle, a lone nose joint above it, and a
    track id above the nose."""
    kpts = np.zeros((17, 3), np.float32)
    mid_y = height / 2 + 0.5
    kpts[5] = (width * 0.2, mid_y, 0.9)  # left shoulder
    kpts[6] = (width * 0.8, mid_y, 0.9)  # right shoulder: link 5-6 is horizontal
    kpts[0] = (width * 0.5, height * 0.3, 0.9)  # nose: no confident neighbour, a lone disc
    image = np.zeros((height, width, 3), np.uint8)
    drawn = draw_poses(image, [Pose(kpts, 1.0, track_id=7)], COCO, cfg)
    painted = np.any(drawn != 0, axis=2)
    line_column = painted[:, int(width * 0.35)]  # between the joints: the line alone
    thickness = int(line_column[int(height * 0.4):].sum())
    nose_row = painted[int(height * 0.3), int(width * 0.4):int(width * 0.6)]
    diameter = int(nose_row.sum())
    text_rows = np.flatnonzero(painted[: int(height * 0.3) - diameter, :].any(axis=1))
    text_height = int(text_rows.max() - text_rows.min() + 1) if text_rows.size else 0
    return thickness, diameter, text_height


@pytest.mark.parametrize(
    ("width", "height", "unit"),
    [(320, 240, 2), (1280, 720, 3), (1920, 1080, 4)],  # max(round(0.003 * (W + H) / 2), 2)
)
def test_default_widths_scale_with_the_picture(width, height, unit):
    assert line_width(width, height) == unit
    thickness, diameter, text_height = _measured_widths(width, height, DrawConfig())
    assert thickness == _opencv_line_pixels(unit), "the skeleton line is drawn with the line width"
    assert diameter == 2 * (unit + 1) + 1, "a joint's radius is the line width + 1"
    widths = drawing_widths(DrawConfig(), width, height)
    assert (widths.radius, widths.thickness) == (unit + 1, unit)
    # The track id's glyphs grow with the picture: OpenCV's height for that scale and stroke.
    (_, expected_h), baseline = cv2.getTextSize("7", cv2.FONT_HERSHEY_SIMPLEX, unit / 3, max(unit - 1, 1))
    assert expected_h - 2 <= text_height <= expected_h + baseline


def test_widths_grow_from_small_to_full_hd_and_overrides_win():
    small, hd, full_hd = (_measured_widths(w, h, DrawConfig()) for w, h in ((320, 240), (1280, 720), (1920, 1080)))
    assert small[0] < hd[0] <= full_hd[0] and small[1] < hd[1] < full_hd[1] and small[2] < hd[2] < full_hd[2]
    # --radius / --thickness are explicit: the same pixels at every size.
    for width, height in ((320, 240), (1920, 1080)):
        thickness, diameter, _ = _measured_widths(width, height, REFERENCE)
        assert (thickness, diameter) == (1, 9)
        thickness, diameter, _ = _measured_widths(width, height, DrawConfig(radius=2, thickness=5))
        assert (thickness, diameter) == (_opencv_line_pixels(5), 5)


def test_recorded_drawing_says_auto_or_the_given_widths():
    assert DrawConfig().recorded() == {"kpt_thr": 0.3, "radius": "auto", "thickness": "auto"}
    assert REFERENCE.recorded() == {"kpt_thr": 0.3, "radius": 4, "thickness": 1}
