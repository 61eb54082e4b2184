"""UDP geometry by its defining property, on sizes the recorded cases do not cover: the warp
maps the first and last pixel centres of the original image onto those of the canvas (the
"unbiased" in UDP), and mapping back from the heatmap grid inverts it. Parity with the
reference itself is in test_family_cases.py."""
from __future__ import annotations

import numpy as np
import pytest

from aepose_cli.udp import dark_udp_adjust, dark_udp_log_maps, udp_image_geometry, udp_to_image_coords


@pytest.mark.parametrize("w,h", [(640, 425), (424, 640), (512, 512), (1000, 333), (97, 1301)])
@pytest.mark.parametrize("scales", [(1.0,), (2.0, 1.0, 0.5)])
def test_warp_maps_pixel_centres_end_to_end(w, h, scales):
    geometry = udp_image_geometry(w, h, scales)
    assert [si.scale for si in geometry.inputs] == sorted(scales, reverse=True)
    wb, hb = geometry.base_size_wh
    assert wb % 64 == 0 and hb % 64 == 0 and min(wb, hb) == 512
    sw, sh = geometry.scale
    assert geometry.center == (sw / 2.0, sh / 2.0)
    for si in geometry.inputs:
        cw, ch = si.size_wh
        m = si.matrix
        assert m[0, 1] == m[1, 0] == m[0, 2] == m[1, 2] == 0  # a pure scaling
        # The short side's first and last pixel land on the canvas's first and last.
        if w < h:
            assert m[0, 0] * (w - 1) == pytest.approx(cw - 1, rel=1e-6)
        else:
            assert m[1, 1] * (h - 1) == pytest.approx(ch - 1, rel=1e-6)


def test_mapping_back_is_the_inverse_scaling_of_the_heatmap_grid():
    geometry = udp_image_geometry(640, 425, (1.0,))
    sw, sh = geometry.scale
    hw, hh = 208, 128  # a 1/4-resolution heatmap of the 832 x 512 canvas
    joints = np.zeros((1, 3, 4), dtype=np.float32)
    joints[0, :, :2] = [[0, 0], [hw - 1, hh - 1], [103.5, 64.25]]
    joints[0, :, 2:] = 7  # scores and tags pass through
    out = udp_to_image_coords(joints, geometry.scale, (hw, hh))
    np.testing.assert_allclose(out[0, 0, :2], [0, 0])
    np.testing.assert_allclose(out[0, 1, :2], [sw, sh], rtol=1e-6)
    np.testing.assert_allclose(out[0, 2, :2], [103.5 * sw / (hw - 1), 64.25 * sh / (hh - 1)], rtol=1e-6)
    assert (out[..., 2:] == 7).all() and joints[0, 1, 0] == hw - 1  # input untouched
    assert udp_to_image_coords(np.zeros((0, 17, 4), np.float32), geometry.scale, (hw, hh)).shape == (0, 17, 4)


def test_dark_step_finds_the_centre_of_a_gaussian_between_pixels():
    """On a Gaussian peak centred off the grid, one DARK step from the best pixel lands close
    to the true centre (the quarter-pixel adjust could only reach +-0.25)."""
    y, x = np.mgrid[0:32, 0:48].astype(np.float32)
    cx, cy = 20.3, 11.7
    heat = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 2.0**2)).astype(np.float32)[None]
    coords = np.array([[[20, 12]]], dtype=np.float32)
    out = dark_udp_adjust(coords, dark_udp_log_maps(heat))
    assert abs(out[0, 0, 0] - cx) < 0.1 and abs(out[0, 0, 1] - cy) < 0.1
    assert dark_udp_adjust(np.zeros((0, 1, 2), np.float32), dark_udp_log_maps(heat)).shape == (0, 1, 2)
