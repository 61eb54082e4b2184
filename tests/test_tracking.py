"""Pose tracking ids and One-Euro smoothing, checked on synthetic sequences and against
transliterations of mmpose 0.29's `get_track_id` (apis/inference_tracking.py, with `oks_iou`
from core/post_processing/nms.py) and `Smoother` + `OneEuroFilter`
(core/post_processing/smoother.py, temporal_filters/one_euro_filter.py), written here from
reading that code.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from aepose_cli.keypoints import AIC, COCO
from aepose_cli.tracking import UNTRACKED, KeypointSmoother, PoseTracker, one_euro_step
from aepose_cli.types import Pose

# A standing COCO person, 100 px tall, centred on the origin (x, y per joint).
_COCO_TEMPLATE = np.array([
    [0, -45], [-3, -48], [3, -48], [-7, -46], [7, -46], [-14, -30], [14, -30], [-18, -12],
    [18, -12], [-20, 5], [20, 5], [-9, 5], [9, 5], [-10, 28], [10, 28], [-10, 50], [10, 50],
], dtype=np.float64)


def person(cx: float, cy: float, scale: float = 1.0, score: float = 0.9) -> Pose:
    keypoints = np.ones((17, 3))
    keypoints[:, :2] = _COCO_TEMPLATE * scale + (cx, cy)
    return Pose(keypoints=keypoints, score=score)


def ids(poses: list[Pose]) -> list[int | None]:
    return [p.track_id for p in poses]


def coco_oks(a: np.ndarray, b: np.ndarray, area_a: float, area_b: float) -> float:
    """Textbook OKS with COCO sigmas and the mean of the two areas as object scale."""
    kappa = 2 * np.asarray(COCO.sigmas)
    d2 = ((a[:, :2] - b[:, :2]) ** 2).sum(axis=1)
    return float(np.mean(np.exp(-d2 / (2 * (area_a + area_b) / 2 * kappa**2))))


# --------------------------------------------------------------------------- tracking


def test_people_moving_smoothly_keep_their_ids():
    tracker = PoseTracker(COCO)
    for t in range(30):
        frame = [person(100 + 3 * t, 200), person(400 - 2 * t, 210, 1.2), person(250, 300 + t)]
        if t % 2:  # the detector's order changes from frame to frame
            frame = frame[::-1]
        got = tracker.update(frame)
        expected = [0, 1, 2] if t % 2 == 0 else [2, 1, 0]
        assert ids(got) == expected
        for before, after in zip(frame, got):
            assert after.keypoints is before.keypoints and after.score == before.score


def test_person_leaving_and_another_entering_gets_a_new_id_and_ids_are_not_reused():
    tracker = PoseTracker(COCO)
    assert ids(tracker.update([person(100, 200), person(400, 200)])) == [0, 1]
    assert ids(tracker.update([person(102, 200)])) == [0]  # id 1 left
    # A new person where person 1 used to be: 1 is not handed out again.
    assert ids(tracker.update([person(102, 200), person(400, 200)])) == [0, 2]
    assert ids(tracker.update([])) == []
    # After an empty frame everybody is new (mmpose only looks one frame back).
    assert ids(tracker.update([person(102, 200)])) == [3]
    assert tracker.next_id == 4


def test_two_people_crossing_keep_their_ids_by_oks():
    tracker = PoseTracker(COCO)
    for t in range(51):  # they pass each other around frame 25
        walker_right = person(100 + 6 * t, 200, 2.0)
        walker_left = person(400 - 6 * t, 215, 2.4)  # nearer the camera
        frame = [walker_left, walker_right] if t % 3 else [walker_right, walker_left]
        expected = [1, 0] if t % 3 else [0, 1]
        assert ids(tracker.update(frame)) == expected, f"frame {t}"
    assert tracker.next_id == 2


def test_threshold_is_strict_and_uses_the_keypoint_sigmas():
    first, second = person(200, 200), person(206, 203)
    _, area = _mmpose_area(first.keypoints)
    oks = coco_oks(first.keypoints, second.keypoints, area, area)
    assert 0.1 < oks < 0.9
    below, above = np.float32(oks) * 0.999, np.float32(oks) * 1.001
    for threshold, expected in ((below, 0), (above, 1)):
        tracker = PoseTracker(COCO, threshold=float(threshold))
        tracker.update([first])
        assert ids(tracker.update([second])) == [expected]
    # Exactly at the threshold is not above it (mmpose compares float32 OKS with `>`).
    exact = _mmpose_oks_iou(first.keypoints.reshape(-1), second.keypoints.reshape(1, -1), area,
                            np.array([area]), np.asarray(COCO.sigmas))[0]
    tracker = PoseTracker(COCO, threshold=float(exact))
    tracker.update([first])
    assert ids(tracker.update([second])) == [1]
    # AIC sigmas are much smaller than COCO's: the same displacement no longer matches.
    aic_first = Pose(first.keypoints[:14].copy(), 0.9)
    aic_second = Pose(second.keypoints[:14].copy(), 0.9)
    coco_like = PoseTracker(AIC, threshold=0.3)
    coco_like.update([aic_first])
    assert ids(coco_like.update([aic_second])) == [1]


def test_iou_matching_follows_boxes():
    tracker = PoseTracker(COCO, use_oks=False)
    tracker.update([person(100, 200), person(300, 200)])
    # 30 px shifts: boxes (40 x 98) still overlap above 0.3 IoU.
    assert ids(tracker.update([person(310, 200), person(112, 205)])) == [1, 0]
    assert ids(tracker.update([person(500, 200)])) == [2]


def test_persons_with_too_few_placed_keypoints_get_id_minus_one():
    sparse = person(200, 200)
    sparse.keypoints[2:, 1] = 0.0  # mmpose counts non-zero y coordinates, not scores
    tracker = PoseTracker(COCO)
    assert ids(tracker.update([sparse])) == [UNTRACKED]
    assert ids(tracker.update([person(600, 200)])) == [0]
    three = person(200, 200)
    three.keypoints[3:, 1] = 0.0
    assert ids(PoseTracker(COCO).update([three])) == [0]
    assert ids(PoseTracker(COCO, min_keypoints=4).update([three])) == [UNTRACKED]


@pytest.mark.parametrize("use_oks", [True, False])
def test_an_untracked_person_stays_in_the_pool_blanked_as_mmpose_leaves_it(use_oks):
    """mmpose sets y = -10 and a zero box on a person it declines to track, and that copy is
    next frame's pool entry: here it no longer attracts the moving person, who keeps id 0."""
    moved = person(130, 150)
    moved.keypoints[:15, 1] = 0.5  # lying along the top edge, legs down
    before = Pose(moved.keypoints + (4.0, 0.0, 0.0), 0.9)
    sparse = Pose(moved.keypoints.copy(), 0.9)
    sparse.keypoints[1:15, 1] = 0.0  # only the nose and the left ankle placed: id -1
    sparse.keypoints[16, 1] = 0.0
    tracker = PoseTracker(COCO, use_oks=use_oks)
    assert ids(tracker.update([before, sparse])) == [0, UNTRACKED]
    assert ids(tracker.update([moved])) == [0]


def test_max_age_keeps_an_id_through_a_missed_frame():
    default, patient = PoseTracker(COCO), PoseTracker(COCO, max_age_frames=2)
    frames = [[person(100, 200), person(300, 200)], [person(103, 200)],
              [person(106, 200), person(306, 200)]]
    assert [ids(default.update(f)) for f in frames] == [[0, 1], [0], [0, 2]]
    assert [ids(patient.update(f)) for f in frames] == [[0, 1], [0], [0, 1]]


def test_wrong_keypoint_count_is_refused():
    with pytest.raises(ValueError, match="aic"):
        PoseTracker(AIC).update([person(0, 0)])


# A transliteration of mmpose 0.29's greedy tracking, on dicts as mmpose keeps them.

def _mmpose_oks_iou(g, d, a_g, a_d, sigmas):
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(len(d), dtype=np.float32)
    for n_d in range(len(d)):
        dx, dy = d[n_d, 0::3] - xg, d[n_d, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((a_g + a_d[n_d]) / 2 + np.spacing(1)) / 2
        ious[n_d] = np.sum(np.exp(-e)) / len(e) if len(e) != 0 else 0.0
    return ious


def _mmpose_area(keypoints):
    xs, ys = keypoints[:, 0], keypoints[:, 1]
    xmin, xmax = np.min(xs[xs > 0], initial=1e10), np.max(xs)
    ymin, ymax = np.min(ys[ys > 0], initial=1e10), np.max(ys)
    return np.array([xmin, ymin, xmax, ymax]), (xmax - xmin) * (ymax - ymin)


def _mmpose_iou(a, b):
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    return inter / (union if union != 0 else 1e-5)


def _mmpose_track(res, last, thr, use_oks, sigmas):
    if use_oks:
        if not last:
            return -1
        scores = _mmpose_oks_iou(res["keypoints"].reshape(-1),
                                 np.array([r["keypoints"].reshape(-1) for r in last]),
                                 res["area"], np.array([r["area"] for r in last]), sigmas)
        best = np.argmax(scores)
        if scores[best] > thr:
            return last.pop(best)["track_id"]
        return -1
    best_score, best = -1, -1
    for index, r in enumerate(last):
        score = _mmpose_iou(list(res["bbox"]), list(r["bbox"]))
        if score > best_score:
            best_score, best = score, index
    return last.pop(best)["track_id"] if best_score > thr else -1


def _mmpose_get_track_id(results, results_last, next_id, use_oks, thr, sigmas, min_keypoints=3):
    results_last = list(results_last)
    for result in results:
        result["bbox"], result["area"] = _mmpose_area(result["keypoints"])
    for result in results:
        track_id = _mmpose_track(result, results_last, thr, use_oks, sigmas)
        if track_id == -1:
            if np.count_nonzero(result["keypoints"][:, 1]) >= min_keypoints:
                result["track_id"], next_id = next_id, next_id + 1
            else:
                result["keypoints"][:, 1] = -10
                result["bbox"] *= 0
                result["track_id"] = -1
        else:
            result["track_id"] = track_id
    return results, next_id


def _random_sequence(rng: np.random.Generator, n_frames: int) -> list[list[np.ndarray]]:
    """Crowded, jittery people that come, go, cross and sometimes lose most joints."""
    people = []  # [cx, cy, vx, vy, scale]
    frames = []
    for _ in range(n_frames):
        people = [p for p in people if rng.random() > 0.1]
        while len(people) < 2 or (len(people) < 7 and rng.random() < 0.3):
            people.append([*rng.uniform(0, 400, 2), *rng.normal(0, 12, 2), rng.uniform(0.4, 1.5)])
        frame = []
        for p in people:
            p[0] += p[2]
            p[1] += p[3]
            keypoints = np.empty((17, 3))
            keypoints[:, :2] = _COCO_TEMPLATE * p[4] + p[:2] + rng.normal(0, 4, (17, 2))
            keypoints[:, 2] = rng.uniform(0, 1, 17)
            if rng.random() < 0.05:
                keypoints[rng.random(17) < 0.9, 1] = 0.0
            frame.append(keypoints)
        frames.append([frame[i] for i in rng.permutation(len(frame))])
    return frames


@pytest.mark.parametrize("use_oks", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ids_equal_mmpose_greedy_tracking_on_random_sequences(use_oks, seed):
    rng = np.random.default_rng(seed)
    frames = _random_sequence(rng, 120)
    sigmas = np.asarray(COCO.sigmas)
    tracker = PoseTracker(COCO, use_oks=use_oks, threshold=0.3)
    last, next_id, matched, untracked = [], 0, 0, 0
    for frame in frames:
        reference = [{"keypoints": k.copy(), "score": 0.5} for k in frame]
        last, next_id = _mmpose_get_track_id(reference, last, next_id, use_oks, 0.3, sigmas)
        ours = tracker.update([Pose(k.copy(), 0.5) for k in frame])
        assert ids(ours) == [r["track_id"] for r in reference]
        matched += sum(r["track_id"] < next_id - len(frame) for r in reference)
        untracked += sum(r["track_id"] == -1 for r in reference)
    assert tracker.next_id == next_id
    # The sequence exercises matches, new ids and the min_keypoints rule alike.
    assert matched > 100 and next_id > 100 and untracked > 0


# --------------------------------------------------------------------------- smoothing


def tracked(track_id: int, xy: np.ndarray, score: float = 0.8) -> Pose:
    keypoints = np.full((len(xy), 3), score)
    keypoints[:, :2] = xy
    return Pose(keypoints, 0.7, track_id)


def run_smoother(smoother, xs, timestamps):
    """Smooth a single-joint, single-track signal given as x values; returns smoothed x."""
    out = []
    for x, t in zip(xs, timestamps):
        (pose,) = smoother.update([tracked(0, np.array([[x, 50.0]]))], t)
        out.append(pose.keypoints[0, 0])
    return np.array(out)


def test_defaults_are_the_mmpose_demo_filter_config():
    smoother = KeypointSmoother(fps=30)
    assert (smoother.min_cutoff, smoother.beta, smoother.d_cutoff) == (0.004, 0.7, 1.0)
    assert smoother.max_missed_frames == 0


def test_constant_signal_is_unchanged():
    smoother = KeypointSmoother(fps=25)
    xy = _COCO_TEMPLATE + 300
    for i in range(20):
        (pose,) = smoother.update([tracked(3, xy)], i / 25)
        np.testing.assert_allclose(pose.keypoints[:, :2], xy, rtol=0, atol=1e-9)
        assert pose.track_id == 3 and pose.score == 0.7
        np.testing.assert_array_equal(pose.keypoints[:, 2], 0.8)


def test_noisy_signal_variance_is_reduced():
    rng = np.random.default_rng(0)
    times = np.arange(300) / 30
    still = 200 + rng.normal(0, 0.3, 300)
    smoothed = run_smoother(KeypointSmoother(fps=30), still, times)
    assert smoothed[50:].var() < 0.6 * still[50:].var()
    # mmpose's beta (0.7 per px/frame) lets multi-pixel jitter through; a smaller one does not.
    truth = 200 + 0.5 * np.arange(300)
    noisy = truth + rng.normal(0, 2.0, 300)
    smoothed = run_smoother(KeypointSmoother(fps=30, beta=0.01), noisy, times)
    assert (smoothed - truth)[50:].var() < 0.2 * (noisy - truth)[50:].var()


def test_step_response_converges():
    xs = np.r_[np.zeros(5), np.full(60, 100.0)] + 10
    smoothed = run_smoother(KeypointSmoother(fps=30), xs, np.arange(65) / 30)
    assert smoothed[4] == 10 and 10 < smoothed[5] < 110  # moves at the step, no overshoot...
    assert np.all(np.diff(smoothed) >= -1e-9) and np.all(smoothed <= 110 + 1e-9)
    assert abs(smoothed[-1] - 110) < 0.5  # ...and settles


def test_vfr_timestamps_set_the_elapsed_time():
    timestamps = [0.0, 1 / 30, 3 / 30, 3.5 / 30, 5 / 30]  # a dropped frame, then a short one
    xs = [10.0, 14.0, 25.0, 26.0, 33.0]
    got = run_smoother(KeypointSmoother(fps=30), xs, timestamps)
    x_prev, dx_prev, expected = np.array(10.0), np.array(0.0), [10.0]
    for x, elapsed in zip(xs[1:], np.diff(timestamps) * 30):
        x_prev, dx_prev = one_euro_step(np.array(x), x_prev, dx_prev, elapsed,
                                        min_cutoff=0.004, beta=0.7, d_cutoff=1.0)
        expected.append(float(x_prev))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # Without timestamps every frame counts as one nominal frame, which smooths differently.
    assert np.abs(run_smoother(KeypointSmoother(fps=30), xs, [None] * 5) - got).max() > 0.01


def test_vfr_uniform_motion_is_followed_with_a_steady_lag():
    """A point moving at constant speed on VFR video: the lag stays put only if the filter
    sees the real time between frames (its derivative estimate is then the true speed)."""
    rng = np.random.default_rng(1)
    timestamps = np.cumsum(rng.choice([1 / 60, 1 / 30, 1 / 15], 200))
    xs = 200 * timestamps  # 200 px/s
    lag_with = (xs - run_smoother(KeypointSmoother(fps=30), xs, timestamps))[20:]
    lag_without = (xs - run_smoother(KeypointSmoother(fps=30), xs, [None] * 200))[20:]
    # One-Euro's steady lag is v / (2 pi (min_cutoff + beta v)) with v in px per frame.
    v = 200 / 30
    np.testing.assert_allclose(lag_with, v / (2 * np.pi * (0.004 + 0.7 * v)), rtol=0.1)
    assert lag_with.std() < 0.25 * lag_without.std()


def test_state_is_dropped_after_a_gap():
    def second_appearance(smoother, gap_frames):
        smoother.update([tracked(0, np.array([[0.0, 0.0]]))], 0.0)
        for i in range(1, gap_frames + 1):
            smoother.update([tracked(1, np.array([[5.0, 5.0]]))], i / 30)
        (pose,) = smoother.update([tracked(0, np.array([[40.0, 40.0]]))], (gap_frames + 1) / 30)
        return pose.keypoints[0, 0]

    assert second_appearance(KeypointSmoother(fps=30), 0) < 40  # consecutive: smoothed
    assert second_appearance(KeypointSmoother(fps=30), 1) == 40  # mmpose: state dropped
    assert second_appearance(KeypointSmoother(fps=30, max_missed_frames=2), 2) < 40
    assert second_appearance(KeypointSmoother(fps=30, max_missed_frames=2), 3) == 40
    # A time limit as well: 1/30 s since last seen is within 0.05 s, 2/30 s is not.
    assert second_appearance(KeypointSmoother(fps=30, max_missed_frames=9, max_gap_s=0.05), 0) < 40
    assert second_appearance(KeypointSmoother(fps=30, max_missed_frames=9, max_gap_s=0.05), 1) == 40


def test_untracked_poses_pass_through_and_duplicate_ids_are_refused():
    smoother = KeypointSmoother(fps=30)
    loose = Pose(np.ones((17, 3)), 0.5)
    minus_one = Pose(np.ones((17, 3)), 0.5, UNTRACKED)
    assert smoother.update([loose, minus_one], 0.0) == [loose, minus_one]
    with pytest.raises(ValueError, match="repeat"):
        smoother.update([tracked(2, np.ones((17, 2))), tracked(2, np.ones((17, 2)))], 0.1)


def _mmpose_smoother_sequence(frames, min_cutoff=0.004, beta=0.7, d_cutoff=1.0):
    """mmpose's Smoother with the one_euro config, one frame per call (time += 1 per frame)."""
    history = {}  # track id -> (x_prev, dx_prev, t_prev)
    out = []
    for frame in frames:
        if not frame:  # Smoother returns empty input untouched and keeps its history
            out.append([])
            continue
        updated, smoothed_frame = {}, []
        for track_id, xy in frame:
            if track_id not in history:
                state, result = (xy, 0.0, np.zeros_like(xy)), xy
            else:
                x_prev, dx_prev, t_prev = history[track_id]
                t = t_prev + 1
                t_e = t - t_prev
                r = 2 * math.pi * d_cutoff * t_e
                a_d = r / (r + 1)
                dx_hat = a_d * ((xy - x_prev) / t_e) + (1 - a_d) * dx_prev
                r = 2 * math.pi * (min_cutoff + beta * np.abs(dx_hat)) * t_e
                a = r / (r + 1)
                result = a * xy + (1 - a) * x_prev
                state = (result, dx_hat, t)
            updated[track_id] = state
            smoothed_frame.append(result)
        history = updated
        out.append(smoothed_frame)
    return out


def test_smoothing_equals_mmpose_smoother_on_a_tracked_random_sequence():
    rng = np.random.default_rng(5)
    frames = _random_sequence(rng, 80)
    tracker, smoother = PoseTracker(COCO), KeypointSmoother(fps=29.97)
    reference_input, ours = [], []
    for index, frame in enumerate(frames):
        poses = [p for p in tracker.update([Pose(k, 0.5) for k in frame]) if p.track_id >= 0]
        reference_input.append([(p.track_id, p.keypoints[:, :2].copy()) for p in poses])
        ours.append(smoother.update(poses, index / 29.97))
    reference = _mmpose_smoother_sequence(reference_input)
    compared = 0
    for mine, theirs, raw in zip(ours, reference, reference_input):
        for pose, expected, (_, xy) in zip(mine, theirs, raw):
            np.testing.assert_allclose(pose.keypoints[:, :2], expected, rtol=1e-9, atol=1e-9)
            compared += not np.allclose(expected, xy)
    assert compared > 50  # many poses were actually changed by the filter
