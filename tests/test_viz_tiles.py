"""tile_raster_images against small hand-computed cases (the tutorials' utils.py semantics)."""

import numpy as np
import pytest

from deeptut.viz.tiles import grid_shape, scale_to_unit_interval, tile_raster_images


def test_layout_spacing_and_unused_tiles():
    X = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float64)
    out = tile_raster_images(X, (2, 2), (2, 2), tile_spacing=(1, 2), scale_rows_to_unit_interval=False,
                             output_pixel_vals=False)
    # (2+1)*2-1 = 5 rows, (2+2)*2-2 = 6 columns
    assert out.shape == (5, 6) and out.dtype == np.float64
    expected = np.array([
        [1, 2, 0, 0, 5, 6],
        [3, 4, 0, 0, 7, 8],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],  # second tile row: unused tiles stay zero
        [0, 0, 0, 0, 0, 0],
    ], dtype=np.float64)
    np.testing.assert_array_equal(out, expected)


def test_row_major_order_and_extra_rows_ignored():
    X = np.arange(5, dtype=np.float64)[:, None] * np.ones((1, 1))  # five 1x1 "images"
    out = tile_raster_images(X, (1, 1), (2, 2), scale_rows_to_unit_interval=False, output_pixel_vals=False)
    np.testing.assert_array_equal(out, [[0, 1], [2, 3]])  # row 4 does not fit and is dropped


def test_scaling_truncates_like_the_tutorial():
    # float64: x * (1 / (3 + 1e-8)) * 255 -> 0, 84.99.., 169.99.., 254.99.. truncated by the uint8 cast
    out = tile_raster_images(np.array([[0.0, 1.0, 2.0, 3.0]]), (2, 2), (1, 1))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 84], [169, 254]])
    # float32: the 1e-8 is below float32 resolution, so the maximum reaches 255
    out32 = tile_raster_images(np.array([[0.0, 1.0, 2.0, 3.0]], np.float32), (2, 2), (1, 1))
    np.testing.assert_array_equal(out32, [[0, 85], [170, 255]])


def test_each_row_scaled_on_its_own():
    X = np.array([[-2.0, 2.0], [10.0, 10.0]], np.float32)  # second row constant -> all zero
    out = tile_raster_images(X, (1, 2), (1, 2), tile_spacing=(0, 1), output_pixel_vals=False)
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.0, 0.0, 0.0]], atol=1e-7)


def test_unscaled_pixel_values_are_clipped():
    out = tile_raster_images(np.array([[0.5, 2.0]]), (1, 2), (1, 1), scale_rows_to_unit_interval=False)
    np.testing.assert_array_equal(out, [[127, 255]])  # 0.5 * 255 = 127.5 truncates; 510 clips to 255


def test_rgba_tuple_defaults():
    R = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = tile_raster_images((R, None, R, None), (2, 2), (1, 2), tile_spacing=(0, 1))
    assert out.shape == (2, 5, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :2, 0], [[0, 84], [169, 254]])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    assert (out[:, :, 1] == 0).all()  # missing colour channel: zeros
    assert (out[:, :, 3] == 255).all()  # missing alpha: opaque
    assert (out[:, 2:, 0] == 0).all()  # spacing and the unused second tile
    f = tile_raster_images((None, None, None, None), (2, 2), (1, 1), output_pixel_vals=False)
    assert f.dtype.kind == "f" and (f[..., 3] == 1.0).all() and (f[..., :3] == 0).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="X must be"):
        tile_raster_images(np.zeros((2, 5)), (2, 2), (1, 2))
    with pytest.raises(ValueError, match="4 channels"):
        tile_raster_images((np.zeros((1, 4)),), (2, 2), (1, 1))
    with pytest.raises(ValueError):
        tile_raster_images(np.zeros((1, 4)), (2, 2, 1), (1, 1))


def test_scale_to_unit_interval_copies():
    a = np.array([1.0, 3.0])
    s = scale_to_unit_interval(a)
    assert a.tolist() == [1.0, 3.0]
    np.testing.assert_allclose(s, [0.0, 1.0], atol=1e-8)


def test_grid_shape():
    assert grid_shape(10) == (3, 4)
    assert grid_shape(500) == (22, 23)
    assert grid_shape(20, max_cols=10) == (4, 5)
    assert grid_shape(1) == (1, 1)


def test_importing_viz_does_not_load_matplotlib():
    import subprocess
    import sys

    code = "import sys, deeptut.viz; assert 'matplotlib' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
