"""The PyTorch U-Nets against an independent NumPy implementation of the authors' Keras model."""

from __future__ import annotations

import io
import zipfile
from itertools import product
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sirtreg.errors import InputError
from sirtreg.segment.network import LESION_SPEC, LIVER_SPEC, UNet3D, UNetSpec, output_shape
from sirtreg.segment.weights import SOURCES, load_network


def test_published_field_of_view():
    """Fig. 2 of the paper: 189x162x162 (x, y, z) in, 163x136x136 out; and the lesion net's 180x172x86 -> 92x84x42."""
    assert output_shape(LIVER_SPEC, (162, 162, 189)) == (136, 136, 163)
    assert output_shape(LIVER_SPEC, (54, 54, 54)) == (28, 28, 28)
    assert output_shape(LESION_SPEC, (86, 172, 180)) == (42, 84, 92)


@pytest.mark.parametrize("shape", [(100, 162, 189), (162, 162), (27, 27, 27 * 7 + 1)])
def test_refuses_shapes_it_cannot_take(shape):
    with pytest.raises(InputError, match="cannot take|3D inputs"):
        output_shape(LIVER_SPEC, shape)


def test_linear_upsampling_is_repetition_then_mean():
    """The authors' "linear" upsampling (repeat x3, 3x3x3 stride-1 mean) equals aligned-corner trilinear."""
    net = UNet3D(LIVER_SPEC)
    x = torch.randn(1, 2, 4, 5, 6)
    repeated = x.repeat_interleave(3, 2).repeat_interleave(3, 3).repeat_interleave(3, 4)
    torch.testing.assert_close(net._upsample(x), F.avg_pool3d(repeated, 3, stride=1), atol=1e-5, rtol=1e-5)


# --- an independent NumPy version of the authors' Keras model, channels last, arrays (x, y, z, c) ---

def _conv(x, kernel, bias, padding):
    kx, ky, kz = kernel.shape[:3]
    if padding == "same":
        x = np.pad(x, ((kx // 2,) * 2, (ky // 2,) * 2, (kz // 2,) * 2, (0, 0)))
    size = [x.shape[a] - kernel.shape[a] + 1 for a in range(3)]
    out = np.zeros((*size, kernel.shape[4])) + bias
    for i, j, k in product(range(kx), range(ky), range(kz)):
        out += x[i:i + size[0], j:j + size[1], k:k + size[2]] @ kernel[i, j, k]
    return out


def _norm_act(x):
    x = (x - x.mean(axis=(0, 1, 2))) / (x.std(axis=(0, 1, 2)) + 1e-7)
    return np.where(x > 0, x, 0.01 * x)


def _crop(x, size):
    lost = [(a - b) // 2 for a, b in zip(x.shape[:3], size)]
    return x[lost[0]:lost[0] + size[0], lost[1]:lost[1] + size[1], lost[2]:lost[2] + size[2]]


def _keras_reference(image, weights, *, factor, padding, upsampling, residual):
    """Forward pass of create_unet_like_model as written in pyliverlesionseg (4 levels), input (x, y, z);
    returns the logits (x', y', z') of the final 1x1x1 convolution."""
    layers = iter(weights)

    def block(path, first):
        shortcut = path
        for j in range(2):
            if not (first and j == 0):
                path = _norm_act(path)
            path = _conv(path, *next(layers), padding)
        if residual:
            shortcut = _crop(shortcut, path.shape[:3])
            if shortcut.shape[3] != path.shape[3]:
                shortcut = _conv(shortcut, *next(layers), padding)
            path = path + shortcut
        return path

    path = image[..., None].astype(np.float64)
    lefts = []
    for level in range(4):
        if level > 0:
            n = [s // factor for s in path.shape[:3]]
            path = path[:n[0] * factor, :n[1] * factor, :n[2] * factor]
            path = path.reshape(n[0], factor, n[1], factor, n[2], factor, -1).max(axis=(1, 3, 5))
        path = block(path, first=level == 0)
        lefts.append(path)
    path = lefts.pop()
    for _ in range(3):
        path = path.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
        if upsampling == "linear":
            windows = np.lib.stride_tricks.sliding_window_view(path, (factor,) * 3, axis=(0, 1, 2))
            path = windows.mean(axis=(-3, -2, -1))
        path = np.concatenate([_crop(lefts.pop(), path.shape[:3]), path], axis=3)
        path = block(path, first=False)
    return _conv(_norm_act(path), *next(layers), padding)[..., 0]  # logits, before the sigmoid


def _hdf5_weights(wheel: Path, member: str):
    with zipfile.ZipFile(wheel) as archive, h5py.File(io.BytesIO(archive.read(member)), "r") as f:
        names = sorted((n for n in f if n.startswith("conv3d_")), key=lambda n: int(n.split("_")[1]))
        return [(f[n][n]["kernel:0"][()].astype(np.float64), f[n][n]["bias:0"][()].astype(np.float64)) for n in names]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size_xyz"), [("liver", (54, 54, 54)), ("lesion", (92, 92, 46))])
def test_equivalence_with_keras_reference(name, size_xyz, authors_wheel, trained_models):
    """Runs the original HDF5 weights through our network and through a NumPy re-implementation of
    the authors' Keras model (channels-last (x, y, z) arrays, kernels used as stored, written from
    their create_unet_like_model), on the same smooth random image, comparing the logits (the sigmoid
    would hide differences where it saturates).

    Agreement to float32 precision proves the kernel transposition (kx, ky, kz, in, out) ->
    (out, in, kz, ky, kx), the (x, y, z) -> (z, y, x) axis order, the layer order and skip
    concatenation order, the normalisation formula, activation slope, pooling, upsampling and
    cropping. A single first-layer voxel is also checked by hand against the raw kernel.
    """
    source = SOURCES[name]
    weights = _hdf5_weights(authors_wheel, source.member)
    spec: UNetSpec = source.spec
    rng = np.random.default_rng(7)
    image = np.clip(rng.normal(0, 0.3, size_xyz), -0.5, 0.5)
    image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 2)) / 3  # some spatial structure

    net = load_network(name, device="cpu")
    tensor = torch.from_numpy(image.transpose(2, 1, 0).astype(np.float32).copy())[None, None]
    with torch.no_grad():
        ours = net.logits(tensor)[0, 0].numpy().transpose(2, 1, 0)
        first = net.down[0].conv_a(tensor)[0].numpy()

    kernel, bias = weights[0]  # (kx, ky, 1, 1, 20) over (x, y, z)
    x, y, z = 10, 11, 12
    shift = 1 if spec.padding == "same" else 0
    by_hand = bias[5] + sum(kernel[i, j, 0, 0, 5] * image[x + i - shift, y + j - shift, z] for i in range(3) for j in range(3))
    assert first[5, z, y, x] == pytest.approx(by_hand, abs=1e-5)

    reference = _keras_reference(
        image, weights, factor=spec.factor, padding=spec.padding, upsampling=spec.upsampling, residual=spec.residual
    )
    assert ours.shape == reference.shape == tuple(reversed(output_shape(spec, tensor.shape[2:])))
    np.testing.assert_allclose(ours, reference, atol=1e-3 * np.abs(reference).max())
    assert reference.std() > 0.1  # not a trivially constant output
